//! Responses API events to neutral events. Each output item is a block,
//! keyed by its `output_index`.

use super::Ev;
use crate::translate::error::ErrorKind;
use crate::translate::reply::{self, StopReason};
use crate::translate::responses::Event;
use crate::translate::{Note, Notes};

#[derive(Default)]
pub(crate) struct Decoder {
    /// Function-call items whose arguments came as deltas.
    streamed: Vec<u64>,
    called: bool,
    refused: bool,
    pub notes: Notes,
}

impl Decoder {
    pub fn decode(&mut self, name: Option<&str>, data: &str, sink: &mut dyn FnMut(Ev<'_>)) {
        let Ok(ev) = serde_json::from_str::<Event>(data) else {
            return;
        };
        let kind = if ev.kind.is_empty() {
            name.unwrap_or("")
        } else {
            ev.kind.as_ref()
        };
        let key = ev.output_index.unwrap_or(0);
        match kind {
            "response.created" => {
                let r = ev.response.unwrap_or_default();
                sink(Ev::Start {
                    id: &r.id,
                    model: &r.model,
                });
            }
            "response.output_item.added" => {
                let Some(item) = ev.item.filter(|i| i.kind == "function_call") else {
                    return;
                };
                self.called = true;
                sink(Ev::ToolStart {
                    key,
                    id: item.call_id.as_deref().unwrap_or(""),
                    name: item.name.as_deref().unwrap_or(""),
                });
                if let Some(a) = item.arguments.as_deref().filter(|a| !a.is_empty()) {
                    self.streamed.push(key);
                    sink(Ev::Args { key, json: a });
                }
            }
            "response.output_text.delta" | "response.refusal.delta" => {
                if kind == "response.refusal.delta" {
                    self.refused = true;
                }
                if let Some(t) = ev.delta.as_deref().filter(|t| !t.is_empty()) {
                    sink(Ev::Text { key, text: t });
                }
            }
            "response.function_call_arguments.delta" => {
                if let Some(a) = ev.delta.as_deref().filter(|a| !a.is_empty()) {
                    if !self.streamed.contains(&key) {
                        self.streamed.push(key);
                    }
                    sink(Ev::Args { key, json: a });
                }
            }
            // Arguments sent only whole, at the end of the call.
            "response.function_call_arguments.done" if !self.streamed.contains(&key) => {
                if let Some(a) = ev.arguments.as_deref().filter(|a| !a.is_empty()) {
                    self.streamed.push(key);
                    sink(Ev::Args { key, json: a });
                }
            }
            "response.output_item.done" => {
                if let Some(item) = ev.item.as_ref().filter(|i| i.kind == "function_call") {
                    if !self.streamed.contains(&key) {
                        if let Some(a) = item.arguments.as_deref().filter(|a| !a.is_empty()) {
                            self.streamed.push(key);
                            sink(Ev::Args { key, json: a });
                        }
                    }
                }
                sink(Ev::End { key });
            }
            "response.reasoning_summary_text.delta" | "response.reasoning_text.delta" => {
                self.notes.add(Note::ThinkingOutputDropped);
            }
            "response.completed" | "response.incomplete" => {
                let r = ev.response.unwrap_or_default();
                if let Some(u) = &r.usage {
                    sink(Ev::Usage(reply::from_responses(u)));
                }
                let reason = r
                    .incomplete_details
                    .as_ref()
                    .and_then(|d| d.reason.as_deref());
                let mut stop = StopReason::from_responses(reason, self.called);
                if self.refused && stop == StopReason::EndTurn {
                    stop = StopReason::Refusal;
                }
                sink(Ev::Stop(stop));
                sink(Ev::Done);
            }
            "response.failed" => {
                let r = ev.response.unwrap_or_default();
                let e = r.error.unwrap_or_default();
                sink(Ev::Error {
                    kind: ErrorKind::from_openai(None, e.code.as_deref(), &e.message, 500),
                    message: &e.message,
                });
            }
            "error" => {
                let message = ev.message.as_deref().unwrap_or("");
                sink(Ev::Error {
                    kind: ErrorKind::from_openai(None, ev.code.as_deref(), message, 500),
                    message,
                });
            }
            _ => {}
        }
    }
}
