//! The built-in default: Anthropic and OpenAI, passing the client's own key
//! through, used when no config file exists (docs/configuration.md).

use super::schema::{FileConfig, ProviderConf, RouteConf};

pub fn builtin_default() -> FileConfig {
    FileConfig {
        providers: vec![
            ProviderConf {
                name: "anthropic".into(),
                api: "anthropic".into(),
                base_url: "https://api.anthropic.com".into(),
                ..ProviderConf::default()
            },
            ProviderConf {
                name: "openai".into(),
                api: "openai".into(),
                base_url: "https://api.openai.com".into(),
                ..ProviderConf::default()
            },
        ],
        routes: vec![
            RouteConf {
                name: "messages".into(),
                paths: vec!["/v1/messages".into()],
                strategy: None,
                providers: vec!["anthropic".into()],
                translate: false,
                affinity: None,
            },
            RouteConf {
                name: "openai".into(),
                paths: vec!["/v1/chat/completions".into(), "/v1/responses".into()],
                strategy: None,
                providers: vec!["openai".into()],
                translate: false,
                affinity: None,
            },
        ],
        ..FileConfig::default()
    }
}
