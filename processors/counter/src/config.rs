use serde::Deserialize;

/// `config:` of a counter stage.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CounterConfig {
    /// Events whose payload starts with this are refused (a processor error, so dead-lettered);
    /// lets tests exercise the processor-error path with well-formed records.
    #[serde(default)]
    pub refuse_payload_prefix: Option<String>,
}
