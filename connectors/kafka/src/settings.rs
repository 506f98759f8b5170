//! How the executor talks to Kafka: one place for every client setting the guarantees rest on.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rdkafka::ClientConfig;

/// Settings of one process's Kafka clients and local state.
#[derive(Debug, Clone)]
pub struct KafkaSettings {
    /// `bootstrap.servers`.
    pub bootstrap: String,
    /// This process's stable identity: static group membership and transactional ids derive
    /// from it, so a restarted instance takes over its own partitions and fences its zombie.
    pub instance: String,
    /// Where local RocksDB state lives (a cache; deletable).
    pub state_dir: PathBuf,
    /// A transaction commits after this long while input keeps coming (or after
    /// `max_records_per_transaction`).
    pub commit_interval: Duration,
    /// A transaction at least this old commits as soon as the task's input is drained: a
    /// quiet or moderately loaded task makes its output visible without waiting out
    /// `commit_interval`, while under load records keep arriving and transactions grow. The
    /// executor raises it to three times the last commit's duration when commits are slow.
    pub idle_commit_after: Duration,
    /// Upper bound of input records per transaction.
    pub max_records_per_transaction: usize,
    /// Consumer `session.timeout.ms`: how long a dead instance keeps its partitions.
    pub session_timeout: Duration,
    /// Producer `transaction.timeout.ms`: how long a dead instance's open transaction blocks
    /// readers before the broker aborts it.
    pub transaction_timeout: Duration,
    /// Extra librdkafka settings for every client (`key=value`), e.g. security.
    pub overrides: Vec<(String, String)>,
}

/// Reads librdkafka client settings from a file of `key=value` lines (`#` starts a comment),
/// the format librdkafka's own tools and `scripts/infra` write: the security protocol, the CA,
/// and a component's credentials, which belong in a file readable by that component alone and
/// never on a command line. Errors name the file and line, never a value.
pub fn read_client_properties(path: &Path) -> Result<Vec<(String, String)>, ClientConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ClientConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    let mut settings = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match line.split_once('=') {
            Some((key, value)) if !key.trim().is_empty() => {
                settings.push((key.trim().to_owned(), value.trim().to_owned()))
            }
            _ => {
                return Err(ClientConfigError::Line {
                    path: path.to_owned(),
                    line: index + 1,
                })
            }
        }
    }
    Ok(settings)
}

/// A client settings file that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ClientConfigError {
    #[error("reading Kafka client settings {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}:{line}: not a `key=value` line", path.display())]
    Line { path: PathBuf, line: usize },
}

impl KafkaSettings {
    /// Settings with defaults for everything but the address and identity.
    pub fn new(
        bootstrap: impl Into<String>,
        instance: impl Into<String>,
        state_dir: PathBuf,
    ) -> Self {
        KafkaSettings {
            bootstrap: bootstrap.into(),
            instance: instance.into(),
            state_dir,
            commit_interval: Duration::from_millis(100),
            idle_commit_after: Duration::from_millis(10),
            max_records_per_transaction: 10_000,
            session_timeout: Duration::from_secs(10),
            transaction_timeout: Duration::from_secs(10),
            overrides: Vec::new(),
        }
    }

    /// The settings of stream thread `index` of this process: its identity (static
    /// membership, transactional ids) is the instance itself for thread 0, so a one-thread
    /// deployment keeps its ids, and `<instance>-<index>` for the others — Kafka Streams'
    /// scheme, stable across restarts with the same `--instance`. Instance names must not be
    /// another instance's name plus `-<n>` (`a` and `a-1` would share ids once `a` runs two
    /// threads).
    pub fn for_thread(&self, index: usize) -> KafkaSettings {
        let mut settings = self.clone();
        if index > 0 {
            settings.instance = format!("{}-{index}", self.instance);
        }
        settings
    }

    /// A client config with the bootstrap servers and overrides.
    pub fn client(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.bootstrap);
        for (k, v) in &self.overrides {
            config.set(k, v);
        }
        config
    }

    /// Transactional producer of a task.
    pub(crate) fn producer(&self, transactional_id: &str) -> ClientConfig {
        let mut config = self.client();
        config
            .set("transactional.id", transactional_id)
            .set("enable.idempotence", "true")
            .set(
                "transaction.timeout.ms",
                self.transaction_timeout.as_millis().to_string(),
            )
            .set("linger.ms", "5")
            // The coordinator answers CONCURRENT_TRANSACTIONS to a transaction begun while the
            // previous one's markers are still being written, and the client retries after
            // this backoff (librdkafka's default: 100 ms). Java's client retries that case
            // after 20 ms (KAFKA-5477); back-to-back transactions are the executor's normal
            // case.
            .set("retry.backoff.ms", "5")
            // Java clients' default, so keys land where any other producer would put them.
            .set("partitioner", "murmur2_random");
        config
    }

    /// Group consumer of a task: read_committed, offsets only through transactions.
    pub(crate) fn consumer(&self, group_id: &str) -> ClientConfig {
        let mut config = self.client();
        config
            .set("group.id", group_id)
            .set("group.instance.id", &self.instance)
            .set("isolation.level", "read_committed")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set(
                "session.timeout.ms",
                self.session_timeout.as_millis().to_string(),
            )
            // librdkafka's default heartbeat (3 s) must stay well under the session timeout:
            // with a 3 s session the session could expire before its first heartbeat was
            // answered, and the member then rejoined forever as an "unknown member".
            .set(
                "heartbeat.interval.ms",
                (self.session_timeout.as_millis() / 3).max(100).to_string(),
            )
            .set("statistics.interval.ms", "5000");
        config
    }

    /// Who this client is to the broker, for error messages: `User:<sasl.username>`, or
    /// the anonymous user of an unauthenticated connection.
    pub fn principal(&self) -> String {
        match self
            .overrides
            .iter()
            .rev()
            .find(|(k, _)| k == "sasl.username")
        {
            Some((_, user)) => format!("User:{user}"),
            None => "User:ANONYMOUS".to_owned(),
        }
    }

    /// The group of a consumer that only assigns and never commits. librdkafka needs one
    /// to assign, and looks up its coordinator, which a secured broker allows only to a
    /// principal with a right on the group: so it is named after the principal
    /// (`<sasl.username>.<purpose>`), whose ACLs cover the groups under its name.
    pub fn unused_group(&self, purpose: &str) -> String {
        match self
            .overrides
            .iter()
            .rev()
            .find(|(k, _)| k == "sasl.username")
        {
            Some((_, user)) => format!("{user}.{purpose}"),
            None => format!("pavilion-{purpose}-unused"),
        }
    }

    /// Changelog reader for restore: commits nothing, read_committed.
    pub(crate) fn restore_consumer(&self) -> ClientConfig {
        let mut config = self.client();
        config
            .set("group.id", self.unused_group("restore"))
            .set("isolation.level", "read_committed")
            // Restore polls until its position passes the end offset; don't let the broker
            // park each fetch at the end of the log for the default 500 ms.
            .set("fetch.wait.max.ms", "10")
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest");
        config
    }
}

#[cfg(test)]
mod tests {
    use super::{read_client_properties, ClientConfigError, KafkaSettings};

    /// Comments and blank lines are skipped, values keep their `=`; a broken line is reported
    /// by number and without its text, which may hold a password.
    #[test]
    fn client_properties_files_are_read_and_errors_name_no_value() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.properties");
        std::fs::write(
            &good,
            "# admin\nsecurity.protocol=SASL_SSL\n\n sasl.password = a=b \n",
        )
        .unwrap();
        assert_eq!(
            read_client_properties(&good).unwrap(),
            [
                ("security.protocol".to_owned(), "SASL_SSL".to_owned()),
                ("sasl.password".to_owned(), "a=b".to_owned())
            ]
        );
        let bad = dir.path().join("bad.properties");
        std::fs::write(&bad, "sasl.username=u\nhunter2\n").unwrap();
        let err = read_client_properties(&bad).unwrap_err();
        assert!(matches!(err, ClientConfigError::Line { line: 2, .. }));
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }

    /// Thread 0 keeps the instance's ids; the others are distinct and stable.
    #[test]
    fn stream_threads_have_their_own_stable_identities() {
        let s = KafkaSettings::new("b:9092", "pod-a", "state".into());
        let ids: Vec<String> = (0..3).map(|i| s.for_thread(i).instance).collect();
        assert_eq!(ids, ["pod-a", "pod-a-1", "pod-a-2"]);
        assert_eq!(
            s.for_thread(0).state_dir,
            s.state_dir,
            "partition stores are shared"
        );
    }

    /// The executor's producers (`murmur2_random`, librdkafka's murmur2) put a keyed record
    /// on the partition the runtime's partitioner names, which is where stages route records
    /// and expect a key's state.
    #[test]
    fn producers_place_keys_where_the_runtime_expects_them() {
        for i in 0..2_000u32 {
            let key = format!("tenant-{i}-{}", "x".repeat(i as usize % 13));
            for partitions in [1, 3, 6, 7, 64] {
                // SAFETY: librdkafka's murmur2 partitioner reads only the key and the count;
                // it does not touch the topic handle or the opaques.
                let librdkafka = unsafe {
                    rdkafka::bindings::rd_kafka_msg_partitioner_murmur2(
                        std::ptr::null(),
                        key.as_ptr().cast(),
                        key.len(),
                        partitions,
                        std::ptr::null_mut(),
                        std::ptr::null_mut(),
                    )
                };
                assert_eq!(
                    librdkafka,
                    pavilion_runtime::partitioner::partition_for(key.as_bytes(), partitions),
                    "{key} over {partitions}"
                );
            }
        }
    }
}
