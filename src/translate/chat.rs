//! OpenAI Chat Completions wire types: requests, responses and stream
//! chunks as far as translation reads or writes them. Inputs are lenient
//! union structs borrowing from the body; outputs are exact.

use super::json::{borrow_raw, StrOr, Url};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::borrow::Cow;

// ---- requests

#[derive(Deserialize, Debug, Default)]
pub struct Request<'a> {
    #[serde(borrow)]
    pub model: Cow<'a, str>,
    #[serde(borrow, default)]
    pub messages: Vec<Message<'a>>,
    pub max_tokens: Option<u64>,
    pub max_completion_tokens: Option<u64>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    #[serde(borrow, default)]
    pub stop: Option<StrOr<'a, Vec<Cow<'a, str>>>>,
    pub stream: Option<bool>,
    pub stream_options: Option<StreamOptions>,
    #[serde(borrow, default)]
    pub tools: Option<Vec<Tool<'a>>>,
    #[serde(borrow, default)]
    pub tool_choice: Option<StrOr<'a, ToolChoice<'a>>>,
    pub parallel_tool_calls: Option<bool>,
    #[serde(borrow, default)]
    pub user: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub reasoning_effort: Option<Cow<'a, str>>,
    pub n: Option<u64>,
    pub logprobs: Option<bool>,
    pub top_logprobs: Option<u64>,
    #[serde(borrow, default)]
    pub response_format: Option<ResponseFormat<'a>>,
    #[serde(borrow, default)]
    pub modalities: Option<Vec<Cow<'a, str>>>,
    #[serde(borrow, default)]
    pub audio: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub web_search_options: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub functions: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub metadata: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub seed: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub frequency_penalty: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub presence_penalty: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub logit_bias: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub service_tier: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub prediction: Option<&'a RawValue>,
}

#[derive(Deserialize, Debug, Default, Clone, Copy)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

#[derive(Deserialize, Debug)]
pub struct ResponseFormat<'a> {
    #[serde(borrow, rename = "type")]
    pub kind: Cow<'a, str>,
}

#[derive(Deserialize, Debug, Default)]
pub struct Message<'a> {
    #[serde(borrow)]
    pub role: Cow<'a, str>,
    #[serde(borrow, default)]
    pub content: Option<StrOr<'a, Vec<Part<'a>>>>,
    #[serde(borrow, default)]
    pub name: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub tool_calls: Option<Vec<ToolCall<'a>>>,
    #[serde(borrow, default)]
    pub tool_call_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub refusal: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub function_call: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub audio: Option<&'a RawValue>,
}

/// A content part of any kind.
#[derive(Deserialize, Debug, Default)]
pub struct Part<'a> {
    #[serde(borrow, rename = "type")]
    pub kind: Cow<'a, str>,
    #[serde(borrow, default)]
    pub text: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub refusal: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub image_url: Option<ImageUrl<'a>>,
    #[serde(borrow, default)]
    pub file: Option<File<'a>>,
}

#[derive(Deserialize, Debug, Default)]
pub struct ImageUrl<'a> {
    #[serde(borrow)]
    pub url: Cow<'a, str>,
}

#[derive(Deserialize, Debug, Default)]
pub struct File<'a> {
    #[serde(borrow, default)]
    pub file_data: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub file_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub filename: Option<Cow<'a, str>>,
}

#[derive(Deserialize, Debug, Default)]
pub struct ToolCall<'a> {
    #[serde(borrow, default)]
    pub id: Cow<'a, str>,
    #[serde(borrow, rename = "type", default)]
    pub kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub function: Function<'a>,
}

#[derive(Deserialize, Debug, Default)]
pub struct Function<'a> {
    #[serde(borrow, default)]
    pub name: Cow<'a, str>,
    #[serde(borrow, default)]
    pub arguments: Cow<'a, str>,
}

#[derive(Deserialize, Debug, Default)]
pub struct Tool<'a> {
    #[serde(borrow, rename = "type", default)]
    pub kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub function: Option<FunctionDef<'a>>,
}

#[derive(Deserialize, Debug, Default)]
pub struct FunctionDef<'a> {
    #[serde(borrow)]
    pub name: Cow<'a, str>,
    #[serde(borrow, default)]
    pub description: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "borrow_raw")]
    pub parameters: Option<Cow<'a, RawValue>>,
}

#[derive(Deserialize, Debug, Default)]
pub struct ToolChoice<'a> {
    #[serde(borrow, rename = "type", default)]
    pub kind: Cow<'a, str>,
    #[serde(borrow, default)]
    pub function: Option<Named<'a>>,
}

#[derive(Deserialize, Debug, Default)]
pub struct Named<'a> {
    #[serde(borrow)]
    pub name: Cow<'a, str>,
}

// ---- requests written (Messages client → Chat provider)

#[derive(Serialize, Debug, Default)]
pub struct RequestOut<'a> {
    pub model: &'a str,
    pub messages: Vec<MessageOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_completion_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop: Option<Vec<&'a str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<StreamOptionsOut>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<ToolOut<'a>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<ToolChoiceOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parallel_tool_calls: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reasoning_effort: Option<&'static str>,
}

#[derive(Serialize, Debug, Clone, Copy)]
pub struct StreamOptionsOut {
    pub include_usage: bool,
}

#[derive(Serialize, Debug)]
pub struct MessageOut<'a> {
    pub role: &'static str,
    /// `None` is written as `null`: an assistant turn of tool calls only.
    pub content: Option<ContentOut<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCallOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<&'a str>,
}

#[derive(Serialize, Debug)]
#[serde(untagged)]
pub enum ContentOut<'a> {
    Text(Cow<'a, str>),
    Parts(Vec<PartOut<'a>>),
}

#[derive(Serialize, Debug)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum PartOut<'a> {
    Text { text: &'a str },
    ImageUrl { image_url: ImageUrlOut<'a> },
    File { file: FileOut<'a> },
}

#[derive(Serialize, Debug)]
pub struct ImageUrlOut<'a> {
    pub url: Url<'a>,
}

#[derive(Serialize, Debug)]
pub struct FileOut<'a> {
    pub filename: &'a str,
    pub file_data: Url<'a>,
}

#[derive(Serialize, Debug)]
pub struct ToolCallOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<&'a str>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<&'static str>,
    pub function: FunctionOut<'a>,
}

#[derive(Serialize, Debug)]
pub struct FunctionOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<&'a str>,
    pub arguments: &'a str,
}

#[derive(Serialize, Debug)]
pub struct ToolOut<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub function: FunctionDefOut<'a>,
}

#[derive(Serialize, Debug)]
pub struct FunctionDefOut<'a> {
    pub name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<&'a str>,
    pub parameters: &'a RawValue,
}

#[derive(Serialize, Debug)]
#[serde(untagged)]
pub enum ToolChoiceOut<'a> {
    Mode(&'static str),
    Function {
        #[serde(rename = "type")]
        kind: &'static str,
        function: NamedOut<'a>,
    },
}

#[derive(Serialize, Debug)]
pub struct NamedOut<'a> {
    pub name: &'a str,
}

// ---- responses and chunks (read)

#[derive(Deserialize, Debug, Default, Clone, Copy)]
pub struct Usage {
    #[serde(default)]
    pub prompt_tokens: u64,
    #[serde(default)]
    pub completion_tokens: u64,
    #[serde(default)]
    pub prompt_tokens_details: Option<PromptDetails>,
}

#[derive(Deserialize, Serialize, Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PromptDetails {
    #[serde(default)]
    pub cached_tokens: u64,
}

/// A completion and a stream chunk alike (`message` in the one, `delta`
/// in the other).
#[derive(Deserialize, Debug, Default)]
pub struct Completion<'a> {
    #[serde(borrow, default)]
    pub id: Cow<'a, str>,
    #[serde(borrow, default)]
    pub model: Cow<'a, str>,
    #[serde(borrow, default)]
    pub choices: Vec<Choice<'a>>,
    #[serde(default)]
    pub usage: Option<Usage>,
    #[serde(borrow, default)]
    pub error: Option<ErrorBody<'a>>,
}

#[derive(Deserialize, Debug, Default)]
pub struct Choice<'a> {
    #[serde(default)]
    pub index: u64,
    #[serde(borrow, default)]
    pub message: Option<Delta<'a>>,
    #[serde(borrow, default)]
    pub delta: Option<Delta<'a>>,
    #[serde(borrow, default)]
    pub finish_reason: Option<Cow<'a, str>>,
}

#[derive(Deserialize, Debug, Default)]
pub struct Delta<'a> {
    #[serde(borrow, default)]
    pub content: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub refusal: Option<Cow<'a, str>>,
    /// Not OpenAI's: the reasoning text some compatible servers stream.
    #[serde(borrow, default)]
    pub reasoning_content: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub reasoning: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub tool_calls: Option<Vec<ToolCallDelta<'a>>>,
}

#[derive(Deserialize, Debug, Default)]
pub struct ToolCallDelta<'a> {
    #[serde(default)]
    pub index: Option<u64>,
    #[serde(borrow, default)]
    pub id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub function: Option<FunctionDelta<'a>>,
}

#[derive(Deserialize, Debug, Default)]
pub struct FunctionDelta<'a> {
    #[serde(borrow, default)]
    pub name: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub arguments: Option<Cow<'a, str>>,
}

#[derive(Deserialize, Serialize, Debug, Default)]
pub struct ErrorBody<'a> {
    #[serde(borrow, default)]
    pub message: Cow<'a, str>,
    #[serde(borrow, rename = "type", default)]
    pub kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub param: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "code")]
    pub code: Option<Cow<'a, str>>,
}

/// OpenAI's `code` is a string, some compatible servers send a number.
fn code<'de: 'a, 'a, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Cow<'a, str>>, D::Error> {
    Ok(
        match Option::<StrOr<'a, serde_json::Number>>::deserialize(d) {
            Ok(Some(StrOr::Str(s))) => Some(s),
            Ok(Some(StrOr::Other(n))) => Some(Cow::Owned(n.to_string())),
            _ => None,
        },
    )
}

#[derive(Deserialize, Serialize, Debug, Default)]
pub struct ErrorEnvelope<'a> {
    #[serde(borrow)]
    pub error: ErrorBody<'a>,
}

// ---- responses and chunks (written)

#[derive(Serialize, Debug)]
pub struct CompletionOut<'a> {
    pub id: &'a str,
    pub object: &'static str,
    pub created: u64,
    pub model: &'a str,
    pub choices: &'a [ChoiceOut<'a>],
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<UsageOut>,
}

#[derive(Serialize, Debug)]
pub struct ChoiceOut<'a> {
    pub index: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<AssistantOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delta: Option<DeltaOut<'a>>,
    pub logprobs: Option<()>,
    pub finish_reason: Option<&'static str>,
}

#[derive(Serialize, Debug)]
pub struct AssistantOut<'a> {
    pub role: &'static str,
    pub content: Option<Cow<'a, str>>,
    pub refusal: Option<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCallOut<'a>>,
}

#[derive(Serialize, Debug, Default)]
pub struct DeltaOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<&'a str>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    pub tool_calls: &'a [ToolCallOut<'a>],
}

#[derive(Serialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsageOut {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
    pub prompt_tokens_details: PromptDetails,
}
