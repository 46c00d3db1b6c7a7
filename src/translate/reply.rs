//! What every dialect's answer has in common: why generation stopped, and
//! the token usage, in neutral terms with each dialect's spelling.

use super::{chat, messages, responses};
use crate::record::Usage;

/// Why the model stopped, in Anthropic's vocabulary (the richest of the
/// three).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    EndTurn,
    MaxTokens,
    StopSequence,
    ToolUse,
    PauseTurn,
    Refusal,
    ContextWindow,
}

impl StopReason {
    pub fn from_anthropic(s: &str) -> StopReason {
        match s {
            "max_tokens" => StopReason::MaxTokens,
            "stop_sequence" => StopReason::StopSequence,
            "tool_use" => StopReason::ToolUse,
            "pause_turn" => StopReason::PauseTurn,
            "refusal" => StopReason::Refusal,
            "model_context_window_exceeded" => StopReason::ContextWindow,
            _ => StopReason::EndTurn,
        }
    }

    pub fn anthropic(self) -> &'static str {
        match self {
            StopReason::EndTurn => "end_turn",
            StopReason::MaxTokens => "max_tokens",
            StopReason::StopSequence => "stop_sequence",
            StopReason::ToolUse => "tool_use",
            StopReason::PauseTurn => "pause_turn",
            StopReason::Refusal => "refusal",
            StopReason::ContextWindow => "model_context_window_exceeded",
        }
    }

    /// Chat's `finish_reason`. `stop` also covers a matched stop sequence:
    /// Chat does not say which one matched, so the way back is `end_turn`.
    pub fn from_chat(s: &str) -> StopReason {
        match s {
            "length" => StopReason::MaxTokens,
            "tool_calls" | "function_call" => StopReason::ToolUse,
            "content_filter" => StopReason::Refusal,
            _ => StopReason::EndTurn,
        }
    }

    pub fn chat(self) -> &'static str {
        match self {
            StopReason::EndTurn | StopReason::StopSequence | StopReason::PauseTurn => "stop",
            StopReason::MaxTokens | StopReason::ContextWindow => "length",
            StopReason::ToolUse => "tool_calls",
            StopReason::Refusal => "content_filter",
        }
    }

    /// A Responses answer: its status, why it is incomplete, and whether
    /// it called a function.
    pub fn from_responses(incomplete: Option<&str>, called: bool) -> StopReason {
        match incomplete {
            Some("max_output_tokens") => StopReason::MaxTokens,
            Some("content_filter") => StopReason::Refusal,
            _ if called => StopReason::ToolUse,
            _ => StopReason::EndTurn,
        }
    }
}

pub fn from_anthropic(u: &messages::Usage) -> Usage {
    Usage {
        input: u.input_tokens,
        output: u.output_tokens,
        cache_read: u.cache_read_input_tokens,
        cache_write: u.cache_creation_input_tokens,
    }
}

pub fn anthropic(u: &Usage) -> messages::Usage {
    messages::Usage {
        input_tokens: u.input,
        output_tokens: u.output,
        cache_creation_input_tokens: u.cache_write,
        cache_read_input_tokens: u.cache_read,
    }
}

/// OpenAI counts cached tokens inside its prompt total; Anthropic does not.
pub fn from_chat(u: &chat::Usage) -> Usage {
    let cached = u.prompt_tokens_details.map_or(0, |d| d.cached_tokens);
    Usage {
        input: u.prompt_tokens.saturating_sub(cached),
        output: u.completion_tokens,
        cache_read: cached,
        cache_write: 0,
    }
}

pub fn from_responses(u: &responses::Usage) -> Usage {
    let cached = u.input_tokens_details.map_or(0, |d| d.cached_tokens);
    Usage {
        input: u.input_tokens.saturating_sub(cached),
        output: u.output_tokens,
        cache_read: cached,
        cache_write: 0,
    }
}

/// Chat usage: cache writes have no field of their own and are counted in
/// the prompt, as OpenAI counts every prompt token.
pub fn chat(u: &Usage) -> chat::UsageOut {
    let prompt = u.input + u.cache_read + u.cache_write;
    chat::UsageOut {
        prompt_tokens: prompt,
        completion_tokens: u.output,
        total_tokens: prompt + u.output,
        prompt_tokens_details: chat::PromptDetails {
            cached_tokens: u.cache_read,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_reasons_round_trip_where_both_sides_have_them() {
        for s in [
            StopReason::EndTurn,
            StopReason::MaxTokens,
            StopReason::ToolUse,
            StopReason::Refusal,
        ] {
            assert_eq!(StopReason::from_chat(s.chat()), s);
            assert_eq!(StopReason::from_anthropic(s.anthropic()), s);
        }
        assert_eq!(StopReason::StopSequence.chat(), "stop");
        assert_eq!(StopReason::ContextWindow.chat(), "length");
        assert_eq!(
            StopReason::from_responses(Some("max_output_tokens"), true),
            StopReason::MaxTokens
        );
        assert_eq!(StopReason::from_responses(None, true), StopReason::ToolUse);
    }

    #[test]
    fn cached_tokens_move_between_prompt_and_cache_read() {
        let u = from_chat(&chat::Usage {
            prompt_tokens: 1000,
            completion_tokens: 20,
            prompt_tokens_details: Some(chat::PromptDetails { cached_tokens: 800 }),
        });
        assert_eq!((u.input, u.cache_read, u.output), (200, 800, 20));
        let back = chat(&u);
        assert_eq!(back.prompt_tokens, 1000);
        assert_eq!(back.prompt_tokens_details.cached_tokens, 800);
        let with_write = chat(&Usage {
            input: 10,
            output: 5,
            cache_read: 100,
            cache_write: 50,
        });
        assert_eq!(with_write.prompt_tokens, 160);
        assert_eq!(with_write.total_tokens, 165);
    }
}
