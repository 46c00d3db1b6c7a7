//! OpenAI Chat Completions → Anthropic Messages.

use super::super::chat::{Message, Part, Request};
use super::super::json::{parse_data_url, StrOr};
use super::super::messages::{self, Block, Source};
use super::super::{Note, Notes, Untranslatable};
use super::*;
use serde_json::value::RawValue;

/// Messages requires `max_tokens`; Chat does not. Every Claude model
/// takes this much output.
const DEFAULT_MAX_TOKENS: u64 = 4096;
/// Anthropic's smallest thinking budget.
const MIN_BUDGET: u64 = 1024;

pub fn translate<'a>(
    req: &'a Request<'a>,
    model: &'a str,
    notes: &mut Notes,
) -> Result<messages::Request<'a>, Untranslatable> {
    refuse_unsupported(req, notes)?;
    let mut system = Vec::new();
    let mut turns: Vec<messages::Message> = Vec::with_capacity(req.messages.len());
    for m in &req.messages {
        if m.name.is_some() {
            notes.add(Note::NameDropped);
        }
        match m.role.as_ref() {
            "system" | "developer" => {
                if !turns.is_empty() {
                    notes.add(Note::SystemMoved);
                }
                for t in texts(m.content.as_ref())? {
                    system.push(Block::text(t));
                }
            }
            "user" => {
                let blocks = user(m)?;
                if blocks.is_empty() {
                    notes.add(Note::EmptyMessageDropped);
                } else {
                    push(&mut turns, "user", blocks);
                }
            }
            "assistant" => {
                let blocks = assistant(m)?;
                if blocks.is_empty() {
                    notes.add(Note::EmptyMessageDropped);
                } else {
                    push(&mut turns, "assistant", blocks);
                }
            }
            "tool" => {
                let text: Vec<Cow<str>> = texts(m.content.as_ref())?;
                let content = match text.len() {
                    1 => text.into_iter().next().map(StrOr::Str),
                    _ => Some(StrOr::Other(text.into_iter().map(Block::text).collect())),
                };
                let block = Block {
                    kind: Cow::Borrowed("tool_result"),
                    tool_use_id: Some(Cow::Borrowed(m.tool_call_id.as_deref().unwrap_or(""))),
                    content,
                    ..Block::default()
                };
                push(&mut turns, "user", vec![block]);
            }
            other => return Err(Untranslatable::new(format!("a message of role {other:?}"))),
        }
    }

    let mut tools = Vec::new();
    for t in req.tools.iter().flatten() {
        let f = match (t.kind.as_deref(), &t.function) {
            (None | Some("function"), Some(f)) => f,
            (kind, _) => {
                return Err(Untranslatable::new(format!(
                    "a tool of type {:?}",
                    kind.unwrap_or("")
                )))
            }
        };
        tools.push(messages::Tool {
            kind: None,
            name: Cow::Borrowed(&f.name),
            description: f.description.as_deref().map(Cow::Borrowed),
            input_schema: Some(Cow::Borrowed(
                f.parameters.as_deref().unwrap_or(empty_schema()),
            )),
            cache_control: None,
        });
    }
    let mut tool_choice = match (&req.tool_choice, tools.is_empty()) {
        (_, true) | (None, _) => None,
        (Some(StrOr::Str(s)), false) => Some(match s.as_ref() {
            "auto" => choice("auto", None),
            "required" => choice("any", None),
            "none" => choice("none", None),
            other => return Err(Untranslatable::new(format!("tool_choice {other:?}"))),
        }),
        (Some(StrOr::Other(c)), false) => match (c.kind.as_ref(), &c.function) {
            ("function", Some(f)) => Some(choice("tool", Some(&f.name))),
            (other, _) => return Err(Untranslatable::new(format!("tool_choice {other:?}"))),
        },
    };
    if req.parallel_tool_calls == Some(false) && !tools.is_empty() {
        let c = tool_choice.get_or_insert_with(|| choice("auto", None));
        if c.kind != "none" {
            c.disable_parallel_tool_use = Some(true);
        }
    }

    let asked = req.max_completion_tokens.or(req.max_tokens);
    let mut max_tokens = asked.unwrap_or(DEFAULT_MAX_TOKENS);
    if asked.is_none() {
        notes.add(Note::MaxTokensDefaulted);
    }
    let mut thinking = None;
    if let Some(budget) = req.reasoning_effort.as_deref().and_then(budget) {
        let forced = tool_choice
            .as_ref()
            .is_some_and(|c| c.kind == "any" || c.kind == "tool");
        // Anthropic wants the thinking that led to a pending tool call sent
        // back with its results; a Chat client never had it.
        let mid_tool_turn = turns
            .iter()
            .rev()
            .find(|t| t.role == "assistant")
            .is_some_and(
                |t| matches!(&t.content, StrOr::Other(b) if b.iter().any(|b| b.kind == "tool_use")),
            );
        let budget = if asked.is_none() {
            max_tokens += budget;
            budget
        } else {
            budget.min(max_tokens / 2)
        };
        if forced || mid_tool_turn || budget < MIN_BUDGET {
            notes.add(Note::ThinkingDisabledForTurn);
        } else {
            thinking = Some(messages::Thinking {
                kind: Cow::Borrowed("enabled"),
                budget_tokens: Some(budget),
            });
        }
    }
    let mut temperature = req.temperature;
    let mut top_p = req.top_p;
    if thinking.is_some() {
        // Thinking runs at its own temperature.
        if temperature.take().is_some() || top_p.take().is_some() {
            notes.add(Note::SamplingDropped);
        }
    } else if let Some(t) = temperature.filter(|t| *t > 1.0) {
        notes.add(Note::TemperatureClamped);
        temperature = Some(t.min(1.0));
    }

    Ok(messages::Request {
        model: Cow::Borrowed(model),
        messages: turns,
        max_tokens: Some(max_tokens),
        system: (!system.is_empty()).then_some(StrOr::Other(system)),
        metadata: req.user.as_deref().map(|u| messages::Metadata {
            user_id: Some(Cow::Borrowed(u)),
        }),
        stop_sequences: match &req.stop {
            None => None,
            Some(StrOr::Str(s)) => Some(vec![Cow::Borrowed(s.as_ref())]),
            Some(StrOr::Other(v)) if v.is_empty() => None,
            Some(StrOr::Other(v)) => Some(v.iter().map(|s| Cow::Borrowed(s.as_ref())).collect()),
        },
        stream: req.stream.filter(|s| *s),
        temperature,
        top_p,
        top_k: None,
        tools: (!tools.is_empty()).then_some(tools),
        tool_choice,
        thinking,
        ..messages::Request::default()
    })
}

fn refuse_unsupported(req: &Request, notes: &mut Notes) -> Result<(), Untranslatable> {
    if req.n.is_some_and(|n| n > 1) {
        return Err(Untranslatable::new("n > 1 (several choices)"));
    }
    if req.logprobs == Some(true) || req.top_logprobs.is_some() {
        return Err(Untranslatable::new("logprobs"));
    }
    if let Some(f) = req.response_format.as_ref().filter(|f| f.kind != "text") {
        return Err(Untranslatable::new(format!(
            "response_format {:?} (structured output)",
            f.kind
        )));
    }
    let audio = req.modalities.iter().flatten().any(|m| m == "audio");
    if audio || req.audio.is_some() {
        return Err(Untranslatable::new("audio output"));
    }
    if req.web_search_options.is_some() {
        return Err(Untranslatable::new("web_search_options"));
    }
    if req.functions.is_some() {
        return Err(Untranslatable::new("functions (the legacy function API)"));
    }
    if req.seed.is_some()
        || req.frequency_penalty.is_some()
        || req.presence_penalty.is_some()
        || req.logit_bias.is_some()
        || req.prediction.is_some()
    {
        notes.add(Note::SamplingDropped);
    }
    if req.metadata.is_some() {
        notes.add(Note::MetadataDropped);
    }
    if req.service_tier.is_some() {
        notes.add(Note::ServiceTierDropped);
    }
    Ok(())
}

/// A thinking budget for an effort; `None` for no thinking.
fn budget(effort: &str) -> Option<u64> {
    match effort {
        "low" => Some(2048),
        "medium" => Some(8192),
        "high" => Some(16384),
        _ => None,
    }
}

fn choice<'a>(kind: &'static str, name: Option<&'a str>) -> messages::ToolChoice<'a> {
    messages::ToolChoice {
        kind: Cow::Borrowed(kind),
        name: name.map(Cow::Borrowed),
        disable_parallel_tool_use: None,
    }
}

/// Consecutive turns of one role are one turn to Anthropic (tool results
/// and the user text that follows them).
fn push<'a>(
    turns: &mut Vec<messages::Message<'a>>,
    role: &'static str,
    mut blocks: Vec<Block<'a>>,
) {
    if let Some(last) = turns.last_mut().filter(|t| t.role == role) {
        if let StrOr::Other(b) = &mut last.content {
            b.append(&mut blocks);
            return;
        }
    }
    turns.push(messages::Message {
        role: Cow::Borrowed(role),
        content: StrOr::Other(blocks),
    });
}

/// The texts of a system, developer or tool message.
fn texts<'a>(
    content: Option<&'a StrOr<'a, Vec<Part<'a>>>>,
) -> Result<Vec<Cow<'a, str>>, Untranslatable> {
    match content {
        None => Ok(Vec::new()),
        Some(StrOr::Str(s)) => Ok(vec![Cow::Borrowed(s.as_ref())]),
        Some(StrOr::Other(parts)) => parts
            .iter()
            .map(|p| match (p.kind.as_ref(), &p.text) {
                ("text", Some(t)) => Ok(Cow::Borrowed(t.as_ref())),
                (kind, _) => Err(Untranslatable::new(format!(
                    "a content part of type {kind:?} where only text is allowed"
                ))),
            })
            .collect(),
    }
}

fn user<'a>(m: &'a Message<'a>) -> Result<Vec<Block<'a>>, Untranslatable> {
    let parts = match &m.content {
        None => return Ok(Vec::new()),
        Some(StrOr::Str(s)) => return Ok(vec![Block::text(Cow::Borrowed(s))]),
        Some(StrOr::Other(p)) => p,
    };
    let mut blocks = Vec::with_capacity(parts.len());
    for p in parts {
        match p.kind.as_ref() {
            "text" => blocks.push(Block::text(Cow::Borrowed(p.text.as_deref().unwrap_or("")))),
            "image_url" => {
                let url = p
                    .image_url
                    .as_ref()
                    .map(|u| u.url.as_ref())
                    .ok_or_else(|| Untranslatable::new("an image_url part without a url"))?;
                blocks.push(Block {
                    kind: Cow::Borrowed("image"),
                    source: Some(source(url)?),
                    ..Block::default()
                });
            }
            "file" => {
                let f = p.file.as_ref();
                let data = f.and_then(|f| f.file_data.as_deref()).ok_or_else(|| {
                    Untranslatable::new("a file part by file_id (the file lives at OpenAI)")
                })?;
                blocks.push(Block {
                    kind: Cow::Borrowed("document"),
                    source: Some(source(data)?),
                    title: f.and_then(|f| f.filename.as_deref()).map(Cow::Borrowed),
                    ..Block::default()
                });
            }
            other => {
                return Err(Untranslatable::new(format!(
                    "a content part of type {other:?}"
                )))
            }
        }
    }
    Ok(blocks)
}

/// A URL or data URL as an Anthropic source.
fn source(url: &str) -> Result<Source<'_>, Untranslatable> {
    if let Some((media, data)) = parse_data_url(url) {
        return Ok(Source {
            kind: Cow::Borrowed("base64"),
            media_type: Some(Cow::Borrowed(media)),
            data: Some(Cow::Borrowed(data)),
            url: None,
        });
    }
    if url.starts_with("https://") || url.starts_with("http://") {
        return Ok(Source {
            kind: Cow::Borrowed("url"),
            url: Some(Cow::Borrowed(url)),
            ..Source::default()
        });
    }
    Err(Untranslatable::new(
        "a file or image URL that is neither http(s) nor base64 data",
    ))
}

fn assistant<'a>(m: &'a Message<'a>) -> Result<Vec<Block<'a>>, Untranslatable> {
    if m.function_call.is_some() {
        return Err(Untranslatable::new(
            "function_call (the legacy function API)",
        ));
    }
    if m.audio.is_some() {
        return Err(Untranslatable::new("an assistant audio reply"));
    }
    let mut blocks = Vec::new();
    match &m.content {
        None => {}
        Some(StrOr::Str(s)) => blocks.push(Block::text(Cow::Borrowed(s))),
        Some(StrOr::Other(parts)) => {
            for p in parts {
                let t = match p.kind.as_ref() {
                    "text" => p.text.as_deref(),
                    "refusal" => p.refusal.as_deref(),
                    other => {
                        return Err(Untranslatable::new(format!(
                            "an assistant part of type {other:?}"
                        )))
                    }
                };
                blocks.push(Block::text(Cow::Borrowed(t.unwrap_or(""))));
            }
        }
    }
    if let Some(r) = m.refusal.as_deref() {
        blocks.push(Block::text(Cow::Borrowed(r)));
    }
    // Anthropic rejects empty text blocks.
    blocks.retain(|b| b.text.as_deref().is_some_and(|t| !t.is_empty()));
    for c in m.tool_calls.iter().flatten() {
        blocks.push(Block {
            kind: Cow::Borrowed("tool_use"),
            id: Some(Cow::Borrowed(&c.id)),
            name: Some(Cow::Borrowed(&c.function.name)),
            input: Some(Cow::Owned(tool_input(&c.function.arguments)?)),
            ..Block::default()
        });
    }
    Ok(blocks)
}

/// A tool call's `arguments` string as the JSON object Anthropic's
/// `input` is. An empty string is a call without arguments.
fn tool_input(args: &str) -> Result<Box<RawValue>, Untranslatable> {
    let args = args.trim();
    if args.is_empty() {
        return RawValue::from_string("{}".into()).map_err(|e| Untranslatable::new(e.to_string()));
    }
    if !args.starts_with('{') {
        return Err(Untranslatable::new(
            "tool call arguments that are not a JSON object",
        ));
    }
    RawValue::from_string(args.to_owned())
        .map_err(|_| Untranslatable::new("tool call arguments that are not valid JSON"))
}
