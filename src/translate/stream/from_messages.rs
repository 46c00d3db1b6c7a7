//! Anthropic Messages events to neutral events; block keys are the
//! provider's block indexes.

use super::Ev;
use crate::record::Usage;
use crate::translate::error::ErrorKind;
use crate::translate::messages::{Event, UsagePatch};
use crate::translate::reply::StopReason;
use crate::translate::{Note, Notes};

#[derive(Default)]
pub(crate) struct Decoder {
    usage: Usage,
    pub notes: Notes,
}

impl Decoder {
    fn patch(&mut self, p: &UsagePatch) {
        let u = &mut self.usage;
        u.input = p.input_tokens.unwrap_or(u.input);
        u.output = p.output_tokens.unwrap_or(u.output);
        u.cache_read = p.cache_read_input_tokens.unwrap_or(u.cache_read);
        u.cache_write = p.cache_creation_input_tokens.unwrap_or(u.cache_write);
    }

    pub fn decode(&mut self, name: Option<&str>, data: &str, sink: &mut dyn FnMut(Ev<'_>)) {
        let Ok(ev) = serde_json::from_str::<Event>(data) else {
            return;
        };
        let kind = if ev.kind.is_empty() {
            name.unwrap_or("")
        } else {
            ev.kind.as_ref()
        };
        let key = ev.index.unwrap_or(0);
        match kind {
            "message_start" => {
                let m = ev.message.unwrap_or_default();
                if let Some(u) = &m.usage {
                    self.patch(u);
                }
                sink(Ev::Usage(self.usage));
                sink(Ev::Start {
                    id: &m.id,
                    model: &m.model,
                });
            }
            "content_block_start" => {
                let Some(b) = ev.content_block else { return };
                match b.kind.as_ref() {
                    "text" => {
                        if let Some(t) = b.text.as_deref().filter(|t| !t.is_empty()) {
                            sink(Ev::Text { key, text: t });
                        }
                    }
                    "tool_use" => sink(Ev::ToolStart {
                        key,
                        id: b.id.as_deref().unwrap_or(""),
                        name: b.name.as_deref().unwrap_or(""),
                    }),
                    "thinking" | "redacted_thinking" => self.notes.add(Note::ThinkingOutputDropped),
                    _ => self.notes.add(Note::UnknownBlockDropped),
                }
            }
            "content_block_delta" => {
                let Some(d) = ev.delta else { return };
                match d.kind.as_deref() {
                    Some("text_delta") => {
                        if let Some(t) = d.text.as_deref().filter(|t| !t.is_empty()) {
                            sink(Ev::Text { key, text: t });
                        }
                    }
                    Some("input_json_delta") => {
                        if let Some(j) = d.partial_json.as_deref().filter(|j| !j.is_empty()) {
                            sink(Ev::Args { key, json: j });
                        }
                    }
                    Some("citations_delta") => self.notes.add(Note::CitationsDropped),
                    _ => {}
                }
            }
            "content_block_stop" => sink(Ev::End { key }),
            "message_delta" => {
                if let Some(u) = &ev.usage {
                    self.patch(u);
                    sink(Ev::Usage(self.usage));
                }
                if let Some(r) = ev.delta.as_ref().and_then(|d| d.stop_reason.as_deref()) {
                    sink(Ev::Stop(StopReason::from_anthropic(r)));
                }
            }
            "message_stop" => sink(Ev::Done),
            "ping" => sink(Ev::Keepalive),
            "error" => {
                let e = ev.error.unwrap_or_default();
                sink(Ev::Error {
                    kind: ErrorKind::from_anthropic(&e.kind, &e.message),
                    message: &e.message,
                });
            }
            _ => {}
        }
    }
}
