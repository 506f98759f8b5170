//! Access control through Kafka's Admin API: ACLs (create, describe, delete) and SCRAM
//! credentials (upsert, delete, list).
//!
//! rust-rdkafka wraps neither, so this calls librdkafka's C admin API (`rd_kafka_CreateAcls`
//! and friends, librdkafka ≥ 2.2) on a queue of its own and waits for the one result event.
//! Every unsafe block is here; callers see plain values.

use std::ffi::{CStr, CString};
use std::fmt;
use std::os::raw::c_char;
use std::ptr;
use std::time::Duration;

use rdkafka::admin::AdminClient;
use rdkafka::bindings as rd;
use rdkafka::client::DefaultClientContext;

use crate::settings::KafkaSettings;

const TIMEOUT: Duration = Duration::from_secs(30);
/// SCRAM-SHA-512 iterations for credentials made here (Kafka's minimum is 4096).
const SCRAM_ITERATIONS: i32 = 8192;

/// Kinds of resources an ACL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Resource {
    Topic,
    Group,
    TransactionalId,
    Cluster,
}

/// How an ACL's resource name matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Pattern {
    Literal,
    /// Every resource whose name starts with the given one (a topic family, a task's
    /// transactional ids).
    Prefixed,
}

/// What an ACL allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Operation {
    Read,
    Write,
    Create,
    Describe,
    DescribeConfigs,
    IdempotentWrite,
}

/// One ALLOW rule for any host: the only kind of rule this project writes (everything not
/// allowed is denied by the authorizer).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Acl {
    /// `User:<name>`.
    pub principal: String,
    pub resource: Resource,
    pub pattern: Pattern,
    pub name: String,
    pub operation: Operation,
}

impl fmt::Display for Acl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pattern = match self.pattern {
            Pattern::Literal => "",
            Pattern::Prefixed => "*",
        };
        write!(
            f,
            "{} {:?} {:?} {}{pattern}",
            self.principal, self.operation, self.resource, self.name
        )
    }
}

/// An Admin API call that failed, or one of its items.
#[derive(Debug, thiserror::Error)]
pub enum AclError {
    #[error("creating the admin client: {0}")]
    Client(#[from] rdkafka::error::KafkaError),
    #[error("{operation}: no answer within {TIMEOUT:?}")]
    Timeout { operation: &'static str },
    #[error("{operation}: {message}")]
    Broker {
        operation: &'static str,
        message: String,
    },
    #[error("{0}: a name holds a NUL byte")]
    Nul(String),
}

impl Resource {
    fn raw(self) -> rd::rd_kafka_ResourceType_t {
        use rd::rd_kafka_ResourceType_t::*;
        match self {
            Resource::Topic => RD_KAFKA_RESOURCE_TOPIC,
            Resource::Group => RD_KAFKA_RESOURCE_GROUP,
            Resource::TransactionalId => RD_KAFKA_RESOURCE_TRANSACTIONAL_ID,
            // librdkafka calls Kafka's CLUSTER resource type (4) "BROKER".
            Resource::Cluster => RD_KAFKA_RESOURCE_BROKER,
        }
    }

    fn from_raw(raw: rd::rd_kafka_ResourceType_t) -> Option<Self> {
        use rd::rd_kafka_ResourceType_t::*;
        Some(match raw {
            RD_KAFKA_RESOURCE_TOPIC => Resource::Topic,
            RD_KAFKA_RESOURCE_GROUP => Resource::Group,
            RD_KAFKA_RESOURCE_TRANSACTIONAL_ID => Resource::TransactionalId,
            RD_KAFKA_RESOURCE_BROKER => Resource::Cluster,
            _ => return None,
        })
    }
}

impl Pattern {
    fn raw(self) -> rd::rd_kafka_ResourcePatternType_t {
        use rd::rd_kafka_ResourcePatternType_t::*;
        match self {
            Pattern::Literal => RD_KAFKA_RESOURCE_PATTERN_LITERAL,
            Pattern::Prefixed => RD_KAFKA_RESOURCE_PATTERN_PREFIXED,
        }
    }

    fn from_raw(raw: rd::rd_kafka_ResourcePatternType_t) -> Option<Self> {
        use rd::rd_kafka_ResourcePatternType_t::*;
        Some(match raw {
            RD_KAFKA_RESOURCE_PATTERN_LITERAL => Pattern::Literal,
            RD_KAFKA_RESOURCE_PATTERN_PREFIXED => Pattern::Prefixed,
            _ => return None,
        })
    }
}

impl Operation {
    fn raw(self) -> rd::rd_kafka_AclOperation_t {
        use rd::rd_kafka_AclOperation_t::*;
        match self {
            Operation::Read => RD_KAFKA_ACL_OPERATION_READ,
            Operation::Write => RD_KAFKA_ACL_OPERATION_WRITE,
            Operation::Create => RD_KAFKA_ACL_OPERATION_CREATE,
            Operation::Describe => RD_KAFKA_ACL_OPERATION_DESCRIBE,
            Operation::DescribeConfigs => RD_KAFKA_ACL_OPERATION_DESCRIBE_CONFIGS,
            Operation::IdempotentWrite => RD_KAFKA_ACL_OPERATION_IDEMPOTENT_WRITE,
        }
    }

    fn from_raw(raw: rd::rd_kafka_AclOperation_t) -> Option<Self> {
        use rd::rd_kafka_AclOperation_t::*;
        Some(match raw {
            RD_KAFKA_ACL_OPERATION_READ => Operation::Read,
            RD_KAFKA_ACL_OPERATION_WRITE => Operation::Write,
            RD_KAFKA_ACL_OPERATION_CREATE => Operation::Create,
            RD_KAFKA_ACL_OPERATION_DESCRIBE => Operation::Describe,
            RD_KAFKA_ACL_OPERATION_DESCRIBE_CONFIGS => Operation::DescribeConfigs,
            RD_KAFKA_ACL_OPERATION_IDEMPOTENT_WRITE => Operation::IdempotentWrite,
            _ => return None,
        })
    }
}

/// An admin client for ACLs and SCRAM credentials.
pub struct AccessAdmin {
    client: AdminClient<DefaultClientContext>,
}

/// A result queue of our own; destroyed with its events.
struct Queue(*mut rd::rd_kafka_queue_t);

impl Drop for Queue {
    fn drop(&mut self) {
        // SAFETY: the queue came from rd_kafka_queue_new and is destroyed once.
        unsafe { rd::rd_kafka_queue_destroy(self.0) }
    }
}

/// One result event; destroyed when dropped (results borrowed from it die with it).
struct Event(*mut rd::rd_kafka_event_t);

impl Drop for Event {
    fn drop(&mut self) {
        // SAFETY: the event came from rd_kafka_queue_poll and is destroyed once.
        unsafe { rd::rd_kafka_event_destroy(self.0) }
    }
}

/// Binding objects handed to a call; librdkafka copies them, so they are freed after it.
struct Bindings(Vec<*mut rd::rd_kafka_AclBinding_t>);

impl Drop for Bindings {
    fn drop(&mut self) {
        for b in &self.0 {
            // SAFETY: each came from rd_kafka_AclBinding(Filter)_new and is freed once.
            unsafe { rd::rd_kafka_AclBinding_destroy(*b) }
        }
    }
}

fn cstring(s: &str) -> Result<CString, AclError> {
    CString::new(s).map_err(|_| AclError::Nul(s.to_owned()))
}

/// A C string owned by librdkafka (or null), copied.
///
/// # Safety
/// `p` is null or a valid NUL-terminated string.
unsafe fn copied(p: *const c_char) -> String {
    if p.is_null() {
        String::new()
    } else {
        CStr::from_ptr(p).to_string_lossy().into_owned()
    }
}

/// The message of a non-null `rd_kafka_error_t`, or None.
///
/// # Safety
/// `error` is null or valid for the event's lifetime.
unsafe fn error_message(error: *const rd::rd_kafka_error_t) -> Option<String> {
    let failed = !error.is_null()
        && rd::rd_kafka_error_code(error) != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR;
    failed.then(|| copied(rd::rd_kafka_error_string(error)))
}

impl AccessAdmin {
    /// Connects with `settings` (an admin's: ACLs and credentials are a super-user's call).
    pub fn new(settings: &KafkaSettings) -> Result<Self, AclError> {
        Ok(AccessAdmin {
            client: settings.client().create()?,
        })
    }

    fn rk(&self) -> *mut rd::rd_kafka_t {
        self.client.inner().native_ptr()
    }

    /// Starts a call on a fresh queue and waits for its result event, checked for a
    /// request-level error.
    fn call(
        &self,
        operation: &'static str,
        start: impl FnOnce(*mut rd::rd_kafka_queue_t),
    ) -> Result<Event, AclError> {
        // SAFETY: rk is the live client's handle; the queue outlives the call it serves.
        let queue = Queue(unsafe { rd::rd_kafka_queue_new(self.rk()) });
        start(queue.0);
        // SAFETY: polling our own queue; the event is owned by the returned guard.
        let raw = unsafe { rd::rd_kafka_queue_poll(queue.0, TIMEOUT.as_millis() as i32) };
        if raw.is_null() {
            return Err(AclError::Timeout { operation });
        }
        let event = Event(raw);
        // SAFETY: the event is valid until dropped.
        unsafe {
            if rd::rd_kafka_event_error(event.0)
                != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR
            {
                return Err(AclError::Broker {
                    operation,
                    message: copied(rd::rd_kafka_event_error_string(event.0)),
                });
            }
        }
        Ok(event)
    }

    fn binding(acl: &Acl) -> Result<*mut rd::rd_kafka_AclBinding_t, AclError> {
        let name = cstring(&acl.name)?;
        let principal = cstring(&acl.principal)?;
        let mut errstr = [0 as c_char; 512];
        // SAFETY: every pointer is a valid C string or buffer for the duration of the call.
        let binding = unsafe {
            rd::rd_kafka_AclBinding_new(
                acl.resource.raw(),
                name.as_ptr(),
                acl.pattern.raw(),
                principal.as_ptr(),
                c"*".as_ptr(),
                acl.operation.raw(),
                rd::rd_kafka_AclPermissionType_t::RD_KAFKA_ACL_PERMISSION_TYPE_ALLOW,
                errstr.as_mut_ptr(),
                errstr.len(),
            )
        };
        if binding.is_null() {
            // SAFETY: librdkafka NUL-terminates errstr.
            let message = unsafe { copied(errstr.as_ptr()) };
            return Err(AclError::Broker {
                operation: "making an ACL",
                message: format!("{acl}: {message}"),
            });
        }
        Ok(binding)
    }

    /// Creates `acls` (creating one that exists is a no-op for Kafka).
    pub fn create(&self, acls: &[Acl]) -> Result<(), AclError> {
        if acls.is_empty() {
            return Ok(());
        }
        let mut bindings = Bindings(Vec::with_capacity(acls.len()));
        for acl in acls {
            bindings.0.push(Self::binding(acl)?);
        }
        let event = self.call("creating ACLs", |queue| unsafe {
            // SAFETY: the bindings stay alive until after the call returns.
            rd::rd_kafka_CreateAcls(
                self.rk(),
                bindings.0.as_mut_ptr(),
                bindings.0.len(),
                ptr::null(),
                queue,
            )
        })?;
        // SAFETY: results borrow from the event, which lives to the end of this scope.
        unsafe {
            let result = rd::rd_kafka_event_CreateAcls_result(event.0);
            let mut count = 0;
            let results = rd::rd_kafka_CreateAcls_result_acls(result, &mut count);
            for (i, acl) in acls.iter().enumerate().take(count) {
                if let Some(message) = error_message(rd::rd_kafka_acl_result_error(*results.add(i)))
                {
                    return Err(AclError::Broker {
                        operation: "creating ACLs",
                        message: format!("{acl}: {message}"),
                    });
                }
            }
        }
        Ok(())
    }

    /// Every ALLOW ACL on the cluster (the project writes no other kind).
    pub fn list(&self) -> Result<Vec<Acl>, AclError> {
        let mut errstr = [0 as c_char; 512];
        // SAFETY: a filter matching everything; null name/principal/host mean "any".
        let filter = unsafe {
            rd::rd_kafka_AclBindingFilter_new(
                rd::rd_kafka_ResourceType_t::RD_KAFKA_RESOURCE_ANY,
                ptr::null(),
                rd::rd_kafka_ResourcePatternType_t::RD_KAFKA_RESOURCE_PATTERN_ANY,
                ptr::null(),
                ptr::null(),
                rd::rd_kafka_AclOperation_t::RD_KAFKA_ACL_OPERATION_ANY,
                rd::rd_kafka_AclPermissionType_t::RD_KAFKA_ACL_PERMISSION_TYPE_ALLOW,
                errstr.as_mut_ptr(),
                errstr.len(),
            )
        };
        let filter = Bindings(vec![filter]);
        let event = self.call("listing ACLs", |queue| unsafe {
            // SAFETY: the filter stays alive until after the call returns.
            rd::rd_kafka_DescribeAcls(self.rk(), filter.0[0], ptr::null(), queue)
        })?;
        let mut acls = Vec::new();
        // SAFETY: bindings borrow from the event, which lives to the end of this scope.
        unsafe {
            let result = rd::rd_kafka_event_DescribeAcls_result(event.0);
            let mut count = 0;
            let found = rd::rd_kafka_DescribeAcls_result_acls(result, &mut count);
            for i in 0..count {
                let b = *found.add(i);
                let (Some(resource), Some(pattern), Some(operation)) = (
                    Resource::from_raw(rd::rd_kafka_AclBinding_restype(b)),
                    Pattern::from_raw(rd::rd_kafka_AclBinding_resource_pattern_type(b)),
                    Operation::from_raw(rd::rd_kafka_AclBinding_operation(b)),
                ) else {
                    continue; // a kind of rule this project never writes
                };
                acls.push(Acl {
                    principal: copied(rd::rd_kafka_AclBinding_principal(b)),
                    resource,
                    pattern,
                    name: copied(rd::rd_kafka_AclBinding_name(b)),
                    operation,
                });
            }
        }
        acls.sort();
        Ok(acls)
    }

    /// Deletes exactly `acls`; returns how many rules the broker removed.
    pub fn delete(&self, acls: &[Acl]) -> Result<usize, AclError> {
        if acls.is_empty() {
            return Ok(0);
        }
        let mut filters = Bindings(Vec::with_capacity(acls.len()));
        for acl in acls {
            // An exact binding is also an exact filter.
            filters.0.push(Self::binding(acl)?);
        }
        let event = self.call("deleting ACLs", |queue| unsafe {
            // SAFETY: the filters stay alive until after the call returns.
            rd::rd_kafka_DeleteAcls(
                self.rk(),
                filters.0.as_mut_ptr(),
                filters.0.len(),
                ptr::null(),
                queue,
            )
        })?;
        let mut deleted = 0;
        // SAFETY: responses borrow from the event, which lives to the end of this scope.
        unsafe {
            let result = rd::rd_kafka_event_DeleteAcls_result(event.0);
            let mut count = 0;
            let responses = rd::rd_kafka_DeleteAcls_result_responses(result, &mut count);
            for i in 0..count {
                let response = *responses.add(i);
                if let Some(message) =
                    error_message(rd::rd_kafka_DeleteAcls_result_response_error(response))
                {
                    return Err(AclError::Broker {
                        operation: "deleting ACLs",
                        message,
                    });
                }
                let mut matched = 0;
                rd::rd_kafka_DeleteAcls_result_response_matching_acls(response, &mut matched);
                deleted += matched;
            }
        }
        Ok(deleted)
    }

    /// Sets `user`'s SCRAM-SHA-512 password (creating the user).
    pub fn set_password(&self, user: &str, password: &str) -> Result<(), AclError> {
        let name = cstring(user)?;
        // SAFETY: the name and password outlive the constructor, which copies them; a null
        // salt lets librdkafka draw a random one.
        let upsert = unsafe {
            rd::rd_kafka_UserScramCredentialUpsertion_new(
                name.as_ptr(),
                rd::rd_kafka_ScramMechanism_t::RD_KAFKA_SCRAM_MECHANISM_SHA_512,
                SCRAM_ITERATIONS,
                password.as_ptr(),
                password.len(),
                ptr::null(),
                0,
            )
        };
        self.alter_credentials("setting a SCRAM credential", user, upsert)
    }

    /// Removes `user`'s SCRAM-SHA-512 credential: new connections as `user` fail at once,
    /// open ones at their next re-authentication (`connections.max.reauth.ms`).
    pub fn delete_password(&self, user: &str) -> Result<(), AclError> {
        let name = cstring(user)?;
        // SAFETY: the name outlives the constructor, which copies it.
        let deletion = unsafe {
            rd::rd_kafka_UserScramCredentialDeletion_new(
                name.as_ptr(),
                rd::rd_kafka_ScramMechanism_t::RD_KAFKA_SCRAM_MECHANISM_SHA_512,
            )
        };
        self.alter_credentials("deleting a SCRAM credential", user, deletion)
    }

    fn alter_credentials(
        &self,
        operation: &'static str,
        user: &str,
        alteration: *mut rd::rd_kafka_UserScramCredentialAlteration_t,
    ) -> Result<(), AclError> {
        let mut alterations = [alteration];
        let event = self.call(operation, |queue| unsafe {
            // SAFETY: the alteration stays alive until after the call returns.
            rd::rd_kafka_AlterUserScramCredentials(
                self.rk(),
                alterations.as_mut_ptr(),
                1,
                ptr::null(),
                queue,
            )
        });
        // SAFETY: created above, freed once, after the call.
        unsafe { rd::rd_kafka_UserScramCredentialAlteration_destroy(alteration) };
        let event = event?;
        // SAFETY: responses borrow from the event, which lives to the end of this scope.
        unsafe {
            let result = rd::rd_kafka_event_AlterUserScramCredentials_result(event.0);
            let mut count = 0;
            let responses =
                rd::rd_kafka_AlterUserScramCredentials_result_responses(result, &mut count);
            for i in 0..count {
                if let Some(message) = error_message(
                    rd::rd_kafka_AlterUserScramCredentials_result_response_error(*responses.add(i)),
                ) {
                    return Err(AclError::Broker {
                        operation,
                        message: format!("{user}: {message}"),
                    });
                }
            }
        }
        Ok(())
    }

    /// Users that have a SCRAM credential.
    pub fn users(&self) -> Result<Vec<String>, AclError> {
        let event = self.call("listing SCRAM users", |queue| unsafe {
            // SAFETY: no user names: describe every user.
            rd::rd_kafka_DescribeUserScramCredentials(
                self.rk(),
                ptr::null_mut(),
                0,
                ptr::null(),
                queue,
            )
        })?;
        let mut users = Vec::new();
        // SAFETY: descriptions borrow from the event, which lives to the end of this scope.
        unsafe {
            let result = rd::rd_kafka_event_DescribeUserScramCredentials_result(event.0);
            let mut count = 0;
            let found =
                rd::rd_kafka_DescribeUserScramCredentials_result_descriptions(result, &mut count);
            for i in 0..count {
                let d = *found.add(i);
                if error_message(rd::rd_kafka_UserScramCredentialsDescription_error(d)).is_none() {
                    users.push(copied(rd::rd_kafka_UserScramCredentialsDescription_user(d)));
                }
            }
        }
        users.sort();
        Ok(users)
    }
}
