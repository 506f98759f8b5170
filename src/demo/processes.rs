//! The demo's processes: `pavilion` commands run against the run's topology (to completion,
//! or in the background until the demo ends), the `restart.sh` that starts them again, and
//! waiting for the pipeline to be ready. `bench e2e` runs its processes the same way.

use std::cell::RefCell;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};

use crate::cli::ClusterArgs;
use crate::commands::acls::Role;

/// The run's folder of Kafka credentials, one per principal.
pub(crate) const CREDENTIALS: &str = "credentials";

/// Child processes, stopped (SIGTERM) when the demo ends, however it ends.
pub(crate) struct Children(pub(crate) Vec<(String, Child)>);

impl Drop for Children {
    fn drop(&mut self) {
        for (_, child) in &self.0 {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
        }
        for (name, child) in &mut self.0 {
            let deadline = Instant::now() + Duration::from_secs(20);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            if child.try_wait().ok().flatten().is_none() {
                eprintln!("  {name} ignored SIGTERM; killed");
                let _ = child.kill();
            }
        }
    }
}

/// Runs `pavilion` commands against the run's topology.
pub(crate) struct Cli {
    pub(crate) dir: PathBuf,
    pub(crate) env: Vec<(String, String)>,
    /// On a secured broker, the run's application: each component then connects as its own
    /// principal, with the credential `acls apply` or `tenant add` wrote to `credentials/`.
    pub(crate) application: Option<String>,
    /// What `spawn` started, by name, with its arguments: written down for a restart.
    spawned: RefCell<Vec<(String, Vec<String>)>>,
    /// Whether the caller's `PAVILION_KAFKA_CONFIG` is kept from the commands: a run on a
    /// plaintext broker must not inherit the secured one's settings.
    plaintext: bool,
}

impl Cli {
    /// The commands of one run: its topology, its broker (the caller's Kafka settings, none
    /// when `kafka_config` is `None`), and keys sealed under a fixed passphrase in `dir` (a
    /// demo's or a benchmark's, never a secret).
    pub(crate) fn for_run(
        dir: &Path,
        topology: &Path,
        bootstrap: &str,
        kafka_config: Option<&Path>,
        log: &str,
    ) -> Cli {
        let passphrase = "demo passphrase (not a secret)".to_owned();
        let path = |p: &str| dir.join(p).display().to_string();
        Cli {
            dir: dir.to_owned(),
            env: vec![
                ("PAVILION_TOPOLOGY".into(), topology.display().to_string()),
                ("PAVILION_BOOTSTRAP".into(), bootstrap.to_owned()),
                ("PAVILION_SIGNING_KEYS".into(), path("keys")),
                ("PAVILION_SIGNING_PASSPHRASE".into(), passphrase.clone()),
                ("PAVILION_SUBJECT_KEYS".into(), path("subjects")),
                (
                    "PAVILION_SUBJECT_KEYS_PASSPHRASE".into(),
                    passphrase.clone(),
                ),
                ("PAVILION_PROVIDER_PASSPHRASE".into(), passphrase),
                ("PAVILION_LOG".into(), log.to_owned()),
            ]
            .into_iter()
            .chain(kafka_config.map(|file| {
                let file = std::fs::canonicalize(file).unwrap_or_else(|_| file.to_owned());
                ("PAVILION_KAFKA_CONFIG".into(), file.display().to_string())
            }))
            .collect(),
            spawned: RefCell::default(),
            application: None,
            plaintext: kafka_config.is_none(),
        }
    }

    /// On a secured broker (the caller's settings log in), gives each component of
    /// `application` its own principal from here on.
    pub(crate) fn own_principals(
        &mut self,
        cluster: &ClusterArgs,
        application: &str,
    ) -> Result<()> {
        let caller = crate::cli::settings(cluster, "principals")?;
        if caller.overrides.iter().any(|(k, _)| k == "sasl.username") {
            self.application = Some(application.to_owned());
        }
        Ok(())
    }

    /// Where `role`'s credential is, when components have their own.
    pub(crate) fn credential(&self, role: &Role) -> Option<PathBuf> {
        let application = self.application.as_deref()?;
        Some(
            self.dir
                .join(CREDENTIALS)
                .join(format!("{}.properties", role.user(application))),
        )
    }

    /// `--kafka-config <role's credential>`, or nothing when components share the caller's.
    pub(crate) fn as_principal(&self, role: &Role) -> Vec<String> {
        self.credential(role)
            .map(|file| vec!["--kafka-config".into(), file.display().to_string()])
            .unwrap_or_default()
    }

    /// Gives every principal of the topology (tasks, anchor, auditor, providers) its ACLs and a
    /// credential in `credentials/`, when components have their own.
    pub(crate) fn apply_acls(&self) -> Result<()> {
        if self.application.is_some() {
            self.ok(&["acls", "apply", "--credentials-dir", CREDENTIALS])?;
        }
        Ok(())
    }

    /// `pavilion run`'s arguments for each task's own credential.
    pub(crate) fn task_credentials(&self) -> Vec<String> {
        match self.application {
            Some(_) => vec!["--kafka-credentials".into(), CREDENTIALS.into()],
            None => Vec::new(),
        }
    }

    pub(crate) fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(std::env::current_exe().expect("own path"));
        c.args(args)
            .current_dir(&self.dir)
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        if self.plaintext {
            c.env_remove("PAVILION_KAFKA_CONFIG");
        }
        c
    }

    /// Runs to completion; its output when it succeeds, its error output when not.
    pub(crate) fn ok(&self, args: &[&str]) -> Result<String> {
        let out = self.command(args).stdin(Stdio::null()).output()?;
        if !out.status.success() {
            bail!(
                "`pavilion {}` failed:\n{}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Starts a long-running command, its output in `<dir>/<log>.log`.
    pub(crate) fn spawn<S: AsRef<str>>(
        &self,
        children: &mut Children,
        log: &str,
        args: &[S],
    ) -> Result<()> {
        let args: Vec<&str> = args.iter().map(AsRef::as_ref).collect();
        let args = &args[..];
        let file = std::fs::File::create(self.dir.join(format!("{log}.log")))?;
        let child = self
            .command(args)
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()?;
        children.0.push((log.to_owned(), child));
        self.spawned.borrow_mut().push((
            log.to_owned(),
            args.iter().map(|a| (*a).to_owned()).collect(),
        ));
        Ok(())
    }

    /// Writes `restart.sh` into the run's folder: the environment and the exact command of
    /// every process `spawn` started, to start them again after the run stopped them. Secrets
    /// stay off command lines and out of the script: each is read from a file in `secrets/`
    /// (mode 600), or, if named in `inherited`, from the caller's environment, as the run got
    /// it. Returns what to print: the script's environment and commands.
    pub(crate) fn write_restart(&self, run: &str, inherited: &[&str]) -> Result<String> {
        let secrets = self.dir.join("secrets");
        let mut env = Vec::new();
        for (name, value) in &self.env {
            let is_secret = ["_PASSPHRASE", "_KEY", "_PIN"]
                .iter()
                .any(|s| name.ends_with(s));
            if inherited.contains(&name.as_str()) {
                env.push(format!(
                    ": \"${{{name}:?set {name} as for the demo; it is never written down}}\"\nexport {name}"
                ));
            } else if is_secret {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(&secrets)?;
                std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o600)
                    .open(secrets.join(name))
                    .and_then(|mut f| f.write_all(value.as_bytes()))
                    .with_context(|| format!("writing secrets/{name}"))?;
                env.push(format!("export {name}=\"$(cat secrets/{name})\""));
            } else {
                env.push(format!("export {name}={}", sh_quote(value)));
            }
        }
        let exe = std::env::current_exe()?.display().to_string();
        let spawned = self.spawned.borrow();
        let names: Vec<&str> = spawned.iter().map(|(n, _)| n.as_str()).collect();
        let commands: Vec<(&str, String)> = spawned
            .iter()
            .map(|(name, args)| {
                let args: Vec<String> = args.iter().map(|a| sh_quote(a)).collect();
                (name.as_str(), args.join(" "))
            })
            .collect();
        let cases: String = commands
            .iter()
            .map(|(name, args)| format!("    {name}) start {name} \"$PAVILION\" {args} ;;\n"))
            .collect();
        let script = format!(
            r#"#!/bin/sh
# Starts again what `pavilion demo` ran for run {run} (the demo stopped them when it ended),
# each in the background, its output appended to NAME.log here and its pid in NAME.pid:
#   ./restart.sh              all of them: {all}
#   ./restart.sh NAME...      only those
# Stop one with: kill "$(cat NAME.pid)" (SIGTERM: it finishes what it is doing and exits).
# Secrets are read from secrets/ (mode 600) or your environment, never put on a command line.
set -eu
cd {dir}
PAVILION={exe}
{env}

start() {{
    name=$1
    shift
    if [ -f "$name.pid" ] && kill -0 "$(cat "$name.pid")" 2>/dev/null; then
        echo "$name is already running (pid $(cat "$name.pid"))"
        return
    fi
    "$@" >>"$name.log" 2>&1 &
    echo $! >"$name.pid"
    echo "started $name (pid $!, log $name.log)"
}}

[ $# -gt 0 ] || set -- {all}
for name in "$@"; do
    case $name in
{cases}    *) echo "no process $name here ({all})" >&2; exit 2 ;;
    esac
done
"#,
            all = names.join(" "),
            dir = sh_quote(&self.dir.display().to_string()),
            exe = sh_quote(&exe),
            env = env.join("\n"),
        );
        let path = self.dir.join("restart.sh");
        std::fs::write(&path, script).with_context(|| format!("writing {}", path.display()))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
        let mut shown = format!("  cd {}\n", sh_quote(&self.dir.display().to_string()));
        for line in &env {
            shown += &format!("  {}\n", line.replace('\n', "\n  "));
        }
        for (name, args) in &commands {
            shown += &format!("  pavilion {args} >>{name}.log 2>&1 &\n");
        }
        Ok(shown)
    }
}

/// `s` as one word of a POSIX shell command line.
fn sh_quote(s: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_./:=@,+%".contains(c);
    if !s.is_empty() && s.chars().all(plain) {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

pub(crate) fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Waits for the pipeline's /readyz.
pub(crate) fn wait_ready(addr: &str, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(r) = ureq::get(&format!("http://{addr}/readyz"))
            .timeout(Duration::from_secs(2))
            .call()
        {
            if r.status() == 200 {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            bail!("the pipeline did not become ready (see pipeline.log)");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 14: the demo left no way to start its processes again. `restart.sh` holds each
    /// one's exact command and the environment, secrets by reference only, and runs.
    #[test]
    fn restart_script_has_every_command_and_no_secret() {
        let dir = tempfile::tempdir().unwrap();
        let mut cli = Cli::for_run(
            dir.path(),
            &dir.path().join("topology.yaml"),
            "127.0.0.1:9092",
            None,
            "info",
        );
        cli.env
            .push(("PAVILION_CHAIN_KEY".into(), "0xsecret-chain-key".into()));
        cli.spawned.borrow_mut().extend([
            (
                "oprf-bank-eu".to_owned(),
                [
                    "provider",
                    "serve-oprf",
                    "bank-eu",
                    "--listen",
                    "127.0.0.1:8700",
                ]
                .map(str::to_owned)
                .to_vec(),
            ),
            (
                "pipeline".to_owned(),
                ["run", "--instance", "demo", "--state-dir", "my state"]
                    .map(str::to_owned)
                    .to_vec(),
            ),
        ]);
        let shown = cli.write_restart("demo1", &["PAVILION_CHAIN_KEY"]).unwrap();
        let script = std::fs::read_to_string(dir.path().join("restart.sh")).unwrap();
        for line in [
            "    oprf-bank-eu) start oprf-bank-eu \"$PAVILION\" provider serve-oprf bank-eu --listen 127.0.0.1:8700 ;;",
            "    pipeline) start pipeline \"$PAVILION\" run --instance demo --state-dir 'my state' ;;",
            "export PAVILION_BOOTSTRAP=127.0.0.1:9092",
            "export PAVILION_SIGNING_PASSPHRASE=\"$(cat secrets/PAVILION_SIGNING_PASSPHRASE)\"",
            ": \"${PAVILION_CHAIN_KEY:?set PAVILION_CHAIN_KEY as for the demo; it is never written down}\"",
        ] {
            assert!(script.contains(line), "no `{line}` in:\n{script}");
        }
        assert!(
            shown.contains(
                "  pavilion run --instance demo --state-dir 'my state' >>pipeline.log 2>&1 &"
            ),
            "{shown}"
        );
        let passphrase = &cli
            .env
            .iter()
            .find(|(k, _)| k == "PAVILION_SIGNING_PASSPHRASE")
            .unwrap()
            .1;
        for text in [&script, &shown] {
            assert!(!text.contains(passphrase.as_str()) && !text.contains("0xsecret"));
        }
        let secret = dir.path().join("secrets/PAVILION_SIGNING_PASSPHRASE");
        assert_eq!(&std::fs::read_to_string(&secret).unwrap(), passphrase);
        assert_eq!(
            std::fs::metadata(&secret).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(!dir.path().join("secrets/PAVILION_CHAIN_KEY").exists());
        // It runs: the environment resolves (secrets read, the inherited key present) and an
        // unknown name is refused before anything starts.
        let out = Command::new("sh")
            .arg(dir.path().join("restart.sh"))
            .arg("nothing")
            .env("PAVILION_CHAIN_KEY", "0xkey")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
        assert_eq!(
            String::from_utf8_lossy(&out.stderr),
            "no process nothing here (oprf-bank-eu pipeline)\n"
        );
        let out = Command::new("sh")
            .arg(dir.path().join("restart.sh"))
            .env_remove("PAVILION_CHAIN_KEY")
            .output()
            .unwrap();
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("set PAVILION_CHAIN_KEY as for the demo"),
            "{out:?}"
        );
        assert!(!dir.path().join("pipeline.pid").exists(), "nothing started");
    }
}
