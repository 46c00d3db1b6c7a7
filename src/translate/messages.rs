//! Anthropic Messages wire types: requests, responses and stream events as
//! far as translation reads or writes them. Inputs are lenient "union"
//! structs (one struct per tagged family, every member optional, unknown
//! members ignored) that borrow from the body; outputs are exact.

use super::json::{borrow_raw, StrOr};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::borrow::Cow;

// ---- requests (read: a Messages client; written: to a Messages provider)

#[derive(Deserialize, Serialize, Default, Debug)]
pub struct Request<'a> {
    #[serde(borrow)]
    pub model: Cow<'a, str>,
    #[serde(borrow, default, skip_serializing_if = "Vec::is_empty")]
    pub messages: Vec<Message<'a>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u64>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub system: Option<StrOr<'a, Vec<Block<'a>>>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Metadata<'a>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub stop_sequences: Option<Vec<Cow<'a, str>>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_k: Option<u64>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<Tool<'a>>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<ToolChoice<'a>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub thinking: Option<Thinking<'a>>,
    /// Read to be refused or noted, never written.
    #[serde(borrow, default, skip_serializing)]
    pub service_tier: Option<&'a RawValue>,
    #[serde(borrow, default, skip_serializing)]
    pub mcp_servers: Option<&'a RawValue>,
    #[serde(borrow, default, skip_serializing)]
    pub container: Option<&'a RawValue>,
    #[serde(borrow, default, skip_serializing)]
    pub context_management: Option<&'a RawValue>,
}

#[derive(Deserialize, Serialize, Default, Debug)]
pub struct Metadata<'a> {
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<Cow<'a, str>>,
}

#[derive(Deserialize, Serialize, Debug)]
pub struct Message<'a> {
    #[serde(borrow)]
    pub role: Cow<'a, str>,
    #[serde(borrow)]
    pub content: StrOr<'a, Vec<Block<'a>>>,
}

/// Every content block kind in one struct: `kind` says which members mean
/// something.
#[derive(Deserialize, Serialize, Default, Debug)]
pub struct Block<'a> {
    #[serde(borrow, rename = "type")]
    pub kind: Cow<'a, str>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub text: Option<Cow<'a, str>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Source<'a>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub id: Option<Cow<'a, str>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub name: Option<Cow<'a, str>>,
    #[serde(
        borrow,
        default,
        deserialize_with = "borrow_raw",
        skip_serializing_if = "Option::is_none"
    )]
    pub input: Option<Cow<'a, RawValue>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub tool_use_id: Option<Cow<'a, str>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub content: Option<StrOr<'a, Vec<Block<'a>>>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_error: Option<bool>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub thinking: Option<Cow<'a, str>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<Cow<'a, str>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub title: Option<Cow<'a, str>>,
    #[serde(borrow, default, skip_serializing)]
    pub cache_control: Option<&'a RawValue>,
    #[serde(borrow, default, skip_serializing)]
    pub citations: Option<&'a RawValue>,
}

impl<'a> Block<'a> {
    pub fn text(text: Cow<'a, str>) -> Self {
        Block {
            kind: Cow::Borrowed("text"),
            text: Some(text),
            ..Block::default()
        }
    }
}

#[derive(Deserialize, Serialize, Default, Debug)]
pub struct Source<'a> {
    #[serde(borrow, rename = "type")]
    pub kind: Cow<'a, str>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<Cow<'a, str>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Cow<'a, str>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub url: Option<Cow<'a, str>>,
}

#[derive(Deserialize, Serialize, Default, Debug)]
pub struct Tool<'a> {
    /// Absent (or `custom`) for a client tool; anything else is a server
    /// tool run by Anthropic.
    #[serde(
        borrow,
        default,
        rename = "type",
        skip_serializing_if = "Option::is_none"
    )]
    pub kind: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub name: Cow<'a, str>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub description: Option<Cow<'a, str>>,
    #[serde(
        borrow,
        default,
        deserialize_with = "borrow_raw",
        skip_serializing_if = "Option::is_none"
    )]
    pub input_schema: Option<Cow<'a, RawValue>>,
    #[serde(borrow, default, skip_serializing)]
    pub cache_control: Option<&'a RawValue>,
}

#[derive(Deserialize, Serialize, Default, Debug)]
pub struct ToolChoice<'a> {
    #[serde(borrow, rename = "type")]
    pub kind: Cow<'a, str>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub name: Option<Cow<'a, str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable_parallel_tool_use: Option<bool>,
}

#[derive(Deserialize, Serialize, Default, Debug)]
pub struct Thinking<'a> {
    #[serde(borrow, rename = "type")]
    pub kind: Cow<'a, str>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_tokens: Option<u64>,
}

// ---- responses (read: from a Messages provider; written: to a client)

#[derive(Deserialize, Serialize, Default, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    #[serde(default)]
    pub input_tokens: u64,
    #[serde(default)]
    pub output_tokens: u64,
    #[serde(default)]
    pub cache_creation_input_tokens: u64,
    #[serde(default)]
    pub cache_read_input_tokens: u64,
}

/// Usage as read from a stream: Anthropic's `message_delta` may omit the
/// input side, which then keeps what `message_start` said.
#[derive(Deserialize, Default, Debug, Clone, Copy)]
pub struct UsagePatch {
    pub input_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
    pub cache_creation_input_tokens: Option<u64>,
    pub cache_read_input_tokens: Option<u64>,
}

#[derive(Deserialize, Debug)]
pub struct Response<'a> {
    #[serde(borrow, default)]
    pub id: Cow<'a, str>,
    #[serde(borrow, default)]
    pub model: Cow<'a, str>,
    #[serde(borrow, default)]
    pub content: Vec<Block<'a>>,
    #[serde(borrow, default)]
    pub stop_reason: Option<Cow<'a, str>>,
    #[serde(default)]
    pub usage: Usage,
}

#[derive(Serialize, Debug)]
pub struct ResponseOut<'a> {
    pub id: &'a str,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub role: &'static str,
    pub model: &'a str,
    pub content: Vec<BlockOut<'a>>,
    pub stop_reason: Option<&'static str>,
    pub stop_sequence: Option<&'a str>,
    pub usage: Usage,
}

/// A content block as a client sees it, in a response or a
/// `content_block_start`.
#[derive(Serialize, Debug)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum BlockOut<'a> {
    Text {
        text: &'a str,
    },
    ToolUse {
        id: &'a str,
        name: &'a str,
        input: &'a RawValue,
    },
}

// ---- stream events

/// Every stream event in one struct (`type` says which members mean
/// something).
#[derive(Deserialize, Debug, Default)]
pub struct Event<'a> {
    #[serde(borrow, rename = "type", default)]
    pub kind: Cow<'a, str>,
    #[serde(borrow, default)]
    pub message: Option<StartMessage<'a>>,
    #[serde(default)]
    pub index: Option<u64>,
    #[serde(borrow, default)]
    pub content_block: Option<Block<'a>>,
    #[serde(borrow, default)]
    pub delta: Option<Delta<'a>>,
    #[serde(default)]
    pub usage: Option<UsagePatch>,
    #[serde(borrow, default)]
    pub error: Option<ErrorBody<'a>>,
}

#[derive(Deserialize, Debug, Default)]
pub struct StartMessage<'a> {
    #[serde(borrow, default)]
    pub id: Cow<'a, str>,
    #[serde(borrow, default)]
    pub model: Cow<'a, str>,
    #[serde(default)]
    pub usage: Option<UsagePatch>,
}

#[derive(Deserialize, Debug, Default)]
pub struct Delta<'a> {
    #[serde(borrow, rename = "type", default)]
    pub kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub text: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub partial_json: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub thinking: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub stop_reason: Option<Cow<'a, str>>,
}

#[derive(Deserialize, Serialize, Debug, Default)]
pub struct ErrorBody<'a> {
    #[serde(borrow, rename = "type", default)]
    pub kind: Cow<'a, str>,
    #[serde(borrow, default)]
    pub message: Cow<'a, str>,
}

/// `{"type":"error","error":{...}}`: an error body and an error event.
#[derive(Deserialize, Serialize, Debug, Default)]
pub struct ErrorEnvelope<'a> {
    #[serde(rename = "type", skip_deserializing, default = "error_str")]
    pub kind: &'static str,
    #[serde(borrow)]
    pub error: ErrorBody<'a>,
}

fn error_str() -> &'static str {
    "error"
}

#[derive(Serialize)]
pub struct MessageStart<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub message: ResponseOut<'a>,
}

#[derive(Serialize)]
pub struct BlockStart<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub index: u64,
    pub content_block: BlockOut<'a>,
}

#[derive(Serialize)]
pub struct BlockDelta<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub index: u64,
    pub delta: DeltaOut<'a>,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum DeltaOut<'a> {
    TextDelta { text: &'a str },
    InputJsonDelta { partial_json: &'a str },
}

#[derive(Serialize)]
pub struct BlockStop {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub index: u64,
}

#[derive(Serialize)]
pub struct MessageDelta<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub delta: StopDelta<'a>,
    pub usage: Usage,
}

#[derive(Serialize)]
pub struct StopDelta<'a> {
    pub stop_reason: Option<&'static str>,
    pub stop_sequence: Option<&'a str>,
}

#[derive(Serialize)]
pub struct Bare {
    #[serde(rename = "type")]
    pub kind: &'static str,
}
