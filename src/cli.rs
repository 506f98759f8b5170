//! What every command shares: where the topology is and how to reach Kafka (the flags),
//! loading and checking the topology, client settings, finding a topic by the schema it
//! holds, reading a topic whole, duration flags and progress bars. Commands use this module;
//! it never uses a command.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use pavilion_client::ClientTls;
use pavilion_http::ServerTls;
use pavilion_kafka::{KafkaSettings, TopicReader};
use pavilion_runtime::topology::{TopicSpec, Topology};
use pavilion_schemas::{Event, Registry};

use crate::kinds;

/// Where topology.yaml is.
#[derive(Args, Clone)]
pub struct TopologyFile {
    /// Path of the topology file.
    #[arg(
        long,
        short = 't',
        env = "PAVILION_TOPOLOGY",
        default_value = DEFAULT_TOPOLOGY
    )]
    pub topology: PathBuf,
    /// The region this runs in, one of the topology's `regions`: stages then read the other
    /// regions' copies of the replicated control topics, tenancy refuses subjects of
    /// jurisdictions the region does not serve, and control records written here are
    /// stamped with it. Without it, one cluster.
    #[arg(
        id = "in_region",
        long = "in-region",
        env = "PAVILION_REGION",
        value_name = "NAME"
    )]
    pub region: Option<String>,
    /// With --in-region: write a control record whose home is another region. Only while
    /// that region is down; when it is back, the later write wins (hybrid logical clocks,
    /// the home's on a tie).
    #[arg(long, requires = "in_region")]
    pub away_from_home: bool,
}

/// `--topology` when neither the flag nor $PAVILION_TOPOLOGY is given.
pub const DEFAULT_TOPOLOGY: &str = "topology.yaml";

/// How to reach Kafka, and which topology.
#[derive(Args, Clone)]
pub struct ClusterArgs {
    #[command(flatten)]
    pub file: TopologyFile,
    /// Kafka bootstrap servers.
    #[arg(
        long,
        short = 'b',
        env = "PAVILION_BOOTSTRAP",
        default_value = "127.0.0.1:9092"
    )]
    pub bootstrap: String,
    /// File of librdkafka client settings (`key=value` lines): security protocol, CA and
    /// this component's credentials. `scripts/infra env` points it at the local broker's
    /// admin; `pavilion acls apply` writes one per principal. Secrets go here, never in `-X`.
    #[arg(long, env = "PAVILION_KAFKA_CONFIG", value_name = "FILE")]
    pub kafka_config: Option<PathBuf>,
    /// Extra librdkafka client setting, repeatable, applied after `--kafka-config` (e.g.
    /// `-X client.id=loader`).
    #[arg(short = 'X', value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub client_config: Vec<(String, String)>,
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("`{s}` is not KEY=VALUE"))
}

/// Parses `100ms`, `2s`, `1m`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("`{s}`: {e} (e.g. 100ms, 2s, 1m)"))
}

/// A regions' clusters file (`scripts/infra regions up` writes one): each region's
/// bootstrap servers and, optionally, its client settings file, as `REGION.bootstrap=…` and
/// `REGION.kafka_config=…` lines (`#` comments and blank lines skipped).
pub fn read_clusters(path: &Path) -> Result<BTreeMap<String, (String, Option<PathBuf>)>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut bootstraps = BTreeMap::new();
    let mut configs = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let parsed = line.split_once('=').and_then(|(k, v)| {
            let (region, key) = k.trim().split_once('.')?;
            Some((region.to_owned(), key.to_owned(), v.trim().to_owned()))
        });
        match parsed {
            Some((region, key, value)) if key == "bootstrap" => {
                bootstraps.insert(region, value);
            }
            Some((region, key, value)) if key == "kafka_config" => {
                configs.insert(region, PathBuf::from(value));
            }
            _ => bail!(
                "{}:{}: expected REGION.bootstrap=HOST:PORT or REGION.kafka_config=FILE",
                path.display(),
                n + 1
            ),
        }
    }
    Ok(bootstraps
        .into_iter()
        .map(|(region, bootstrap)| {
            let config = configs.remove(&region);
            (region, (bootstrap, config))
        })
        .collect())
}

/// Reads and checks a topology file; every error is reported with `path:line:`.
pub fn load(file: &TopologyFile) -> Result<Topology> {
    let path = &file.topology;
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let topology = parse(&text, path)?;
    match &file.region {
        None => Ok(topology),
        Some(region) => topology
            .in_region(region)
            .map_err(|e| anyhow::anyhow!("{}: --in-region {e}", path.display())),
    }
}

/// Checks a topology's text; every error is reported with `path:line:`.
pub fn parse(text: &str, path: &Path) -> Result<Topology> {
    let registry = Registry::builtin();
    Topology::parse(text, &kinds::all(), &|s| registry.schema(s).is_some()).map_err(|errors| {
        let lines: Vec<String> = errors
            .0
            .iter()
            .map(|e| match e.line {
                Some(line) => format!("{}:{line}: {}", path.display(), e.message),
                None => format!("{}: {}", path.display(), e.message),
            })
            .collect();
        anyhow::anyhow!(
            "{} has {} error(s):\n{}",
            path.display(),
            lines.len(),
            lines.join("\n")
        )
    })
}

/// Kafka settings from the command line: the bootstrap, `--kafka-config`'s file, then `-X`.
pub fn settings(args: &ClusterArgs, instance: &str) -> Result<KafkaSettings> {
    let mut s = KafkaSettings::new(&args.bootstrap, instance, std::env::temp_dir());
    if let Some(file) = &args.kafka_config {
        s.overrides = pavilion_kafka::read_client_properties(file)?;
    }
    s.overrides.extend(args.client_config.iter().cloned());
    Ok(s)
}

/// How a server speaks HTTP: TLS given a certificate, plain HTTP on loopback, or plain HTTP
/// beyond it only when told `--insecure`.
#[derive(Args, Clone, Debug, Default)]
pub struct HttpServerArgs {
    /// PEM certificate chain (leaf first) to serve HTTPS with; its key in --tls-key.
    #[arg(
        long,
        env = "PAVILION_TLS_CERT",
        requires = "tls_key",
        value_name = "FILE"
    )]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert (PKCS#8, PKCS#1 or SEC1).
    #[arg(
        long,
        env = "PAVILION_TLS_KEY",
        requires = "tls_cert",
        value_name = "FILE"
    )]
    pub tls_key: Option<PathBuf>,
    /// Require a client certificate that chains to a CA in this PEM file.
    #[arg(long, requires = "tls_cert", value_name = "FILE")]
    pub tls_client_ca: Option<PathBuf>,
    /// Serve plain HTTP on a non-loopback address anyway. Without it, a server without
    /// --tls-cert refuses to start there: anyone on that network could read its answers and
    /// forge its requests.
    #[arg(long, env = "PAVILION_INSECURE")]
    pub insecure: bool,
}

impl HttpServerArgs {
    /// The server's TLS, loaded before anything opens, or `None` for plain HTTP, which is
    /// refused on an address (given by `flag`) reachable beyond this machine unless
    /// `--insecure` says so.
    pub fn tls(&self, addr: SocketAddr, flag: &str) -> Result<Option<ServerTls>> {
        if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
            return Ok(Some(ServerTls::from_pem_files(
                cert,
                key,
                self.tls_client_ca.as_deref(),
            )?));
        }
        if addr.ip().is_loopback() {
            return Ok(None);
        }
        if self.insecure {
            eprintln!("warning: serving plain HTTP on {addr} ({flag}), reachable beyond this machine (--insecure)");
            return Ok(None);
        }
        bail!(
            "{flag} {addr} is reachable beyond this machine: serve it with TLS (--tls-cert and \
             --tls-key), or pass --insecure to serve plain HTTP anyway"
        )
    }

    /// `http` or `https`, for the URLs a server prints.
    pub fn scheme(&self) -> &'static str {
        if self.tls_cert.is_some() {
            "https"
        } else {
            "http"
        }
    }
}

/// Completes once `flag` is set (by a signal handler, or a stopping service): a server's
/// graceful shutdown.
pub async fn until(flag: std::sync::Arc<std::sync::atomic::AtomicBool>) {
    while !flag.load(std::sync::atomic::Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// How a client reaches the providers' HTTPS services.
#[derive(Args, Clone, Debug, Default)]
pub struct HttpClientArgs {
    /// PEM CA certificates to trust besides the system's, for https endpoints.
    #[arg(long, env = "PAVILION_HTTP_CA", value_name = "FILE")]
    pub http_ca: Option<PathBuf>,
    /// PEM client certificate to present to services that require one; its key in
    /// --client-key.
    #[arg(
        long,
        env = "PAVILION_CLIENT_CERT",
        requires = "client_key",
        value_name = "FILE"
    )]
    pub client_cert: Option<PathBuf>,
    /// PKCS#8 PEM private key of --client-cert.
    #[arg(
        long,
        env = "PAVILION_CLIENT_KEY",
        requires = "client_cert",
        value_name = "FILE"
    )]
    pub client_key: Option<PathBuf>,
}

impl HttpClientArgs {
    pub fn tls(&self) -> Result<ClientTls> {
        let read = |path: &PathBuf| {
            std::fs::read(path).with_context(|| format!("reading {}", path.display()))
        };
        let mut tls = ClientTls::default();
        if let Some(ca) = &self.http_ca {
            tls.trusted_pem = Some(read(ca)?);
        }
        if let (Some(cert), Some(key)) = (&self.client_cert, &self.client_key) {
            tls.identity_pem = Some((read(cert)?, read(key)?));
        }
        Ok(tls)
    }
}

/// `settings` as the principal whose credential is `file` (written by `acls apply` or
/// `tenant add`): its settings laid over the others.
pub fn as_principal(settings: &KafkaSettings, file: &Path) -> Result<KafkaSettings> {
    let mut s = settings.clone();
    s.overrides
        .extend(pavilion_kafka::read_client_properties(file)?);
    Ok(s)
}

/// The one topic (or topic family) of the topology whose records are `schema`: control-topic
/// commands find their topic by what it holds, not by a hard-coded name. Where the pipeline
/// also writes records of that schema elsewhere (the routed copy of requests), the one it
/// does not write is where outsiders produce.
pub fn topic_for(topology: &Topology, schema: &str) -> Result<TopicSpec> {
    let mut found: Vec<&TopicSpec> = topology
        .topics
        .values()
        .chain(topology.families.values())
        .filter(|t| t.schema.as_deref() == Some(schema) && !topology.is_copy(&t.name))
        .collect();
    if found.len() > 1 {
        let written = |topic: &TopicSpec| {
            topology
                .stages
                .values()
                .any(|s| s.outputs.values().any(|o| *o == topic.name))
        };
        found.retain(|t| !written(t));
    }
    match found[..] {
        [one] => Ok(one.clone()),
        _ => bail!(
            "topology.yaml must declare exactly one topic with schema {schema} (found {:?})",
            found.iter().map(|t| &t.name).collect::<Vec<_>>()
        ),
    }
}

/// Every record of a topic, read_committed from the beginning, decoded; tombstones and
/// records that do not decode (reported) are skipped.
pub fn read_all<E: Event>(cluster: &ClusterArgs, topic: &str) -> Result<Vec<(Vec<u8>, E)>> {
    let records = TopicReader::new(&settings(cluster, "cli")?, &[topic])?
        .read_to_end(Duration::from_secs(60))
        .with_context(|| format!("reading {topic}"))?;
    let mut out = Vec::with_capacity(records.len());
    for r in records {
        let Some(value) = r.value else { continue };
        match Registry::builtin().decode::<E>(&value) {
            Ok(e) => out.push((r.key, e)),
            Err(e) => eprintln!(
                "warning: skipping undecodable record at {topic}/{}@{}: {e}",
                r.partition, r.offset
            ),
        }
    }
    Ok(out)
}

/// A progress bar of `len` steps labelled `what`, with its rate and time left.
pub(crate) fn bar(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{what:>10} [{{bar:30}}] {{pos}}/{{len}} {{per_sec}} eta {{eta}}"
        ))
        .expect("template")
        .progress_chars("=> "),
    );
    bar
}
