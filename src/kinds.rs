//! Every processor kind this binary can build, by the name topology.yaml uses.

use pavilion_runtime::StageKinds;

/// The kinds compiled in.
pub fn all() -> StageKinds {
    StageKinds::new([
        &pavilion_counter::KIND,
        &pavilion_totals::KIND,
        &pavilion_tenancy::KIND,
        &pavilion_policy::KIND,
        &pavilion_psi::KIND,
        &pavilion_signing::KIND,
        &pavilion_audit::KIND,
        &pavilion_analytics::KIND,
    ])
}
