//! Every `pavilion` command but `demo` and `bench`, by area; what they share is in
//! [`crate::cli`].

pub mod acls;
pub mod analytics;
pub mod audit;
pub mod control;
pub mod keys;
pub mod psi;
pub mod request;
pub mod run;
pub mod schemas;
pub mod topology;
