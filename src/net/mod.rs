//! Network awareness: whether the box has a usable network right now.

/// What the network monitor reports: whether the box can reach its server now, and which
/// watched interfaces are usable (up, carrier, address).
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
pub struct NetworkStatus {
    pub online: bool,
    pub interfaces: Vec<String>,
}
