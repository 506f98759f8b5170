use serde::Deserialize;

/// `config:` of a totals stage: it has no settings.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TotalsConfig {}
