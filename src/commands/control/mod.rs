//! The control topics' tools: tenants, policies and data providers. Every change is an
//! event on its topic; current state is read back from the topic.

pub mod credentials;
pub mod evidence;
pub mod policy;
pub mod provider;
pub mod tenant;
