//! Chat Completions chunks to neutral events. Text is block key 0; tool
//! call `index` i is block key i + 1.

use super::Ev;
use crate::translate::chat::Completion;
use crate::translate::error;
use crate::translate::reply::{self, StopReason};
use crate::translate::{Note, Notes};

#[derive(Default)]
pub(crate) struct Decoder {
    started: bool,
    /// Tool call indexes already opened (a few servers repeat the id).
    tools: Vec<u64>,
    refused: bool,
    pub notes: Notes,
}

const TEXT: u64 = 0;

impl Decoder {
    pub fn decode(&mut self, data: &str, sink: &mut dyn FnMut(Ev<'_>)) {
        let data = data.trim();
        if data == "[DONE]" {
            sink(Ev::Done);
            return;
        }
        let Ok(c) = serde_json::from_str::<Completion>(data) else {
            return;
        };
        if let Some(e) = c.error {
            let p = error::openai(e, 200);
            sink(Ev::Error {
                kind: p.kind,
                message: &p.message,
            });
            return;
        }
        if !self.started {
            self.started = true;
            sink(Ev::Start {
                id: &c.id,
                model: &c.model,
            });
        }
        // n > 1 is refused at the request: the first choice is the answer.
        for ch in c.choices.iter().filter(|ch| ch.index == 0) {
            if let Some(d) = &ch.delta {
                let some =
                    |s: &Option<std::borrow::Cow<str>>| s.as_deref().is_some_and(|t| !t.is_empty());
                if some(&d.reasoning_content) || some(&d.reasoning) {
                    self.notes.add(Note::ThinkingOutputDropped);
                }
                if let Some(t) = d.content.as_deref().filter(|t| !t.is_empty()) {
                    sink(Ev::Text { key: TEXT, text: t });
                }
                if let Some(t) = d.refusal.as_deref().filter(|t| !t.is_empty()) {
                    self.refused = true;
                    sink(Ev::Text { key: TEXT, text: t });
                }
                for (pos, tc) in d.tool_calls.iter().flatten().enumerate() {
                    let key = tc.index.unwrap_or(pos as u64) + 1;
                    let f = tc.function.as_ref();
                    if !self.tools.contains(&key) {
                        self.tools.push(key);
                        sink(Ev::ToolStart {
                            key,
                            id: tc.id.as_deref().unwrap_or(""),
                            name: f.and_then(|f| f.name.as_deref()).unwrap_or(""),
                        });
                    }
                    if let Some(a) = f
                        .and_then(|f| f.arguments.as_deref())
                        .filter(|a| !a.is_empty())
                    {
                        sink(Ev::Args { key, json: a });
                    }
                }
            }
            if let Some(r) = ch.finish_reason.as_deref() {
                let stop = if self.refused {
                    StopReason::Refusal
                } else {
                    StopReason::from_chat(r)
                };
                sink(Ev::Stop(stop));
            }
        }
        if let Some(u) = &c.usage {
            sink(Ev::Usage(reply::from_chat(u)));
        }
    }
}
