//! What a pipeline defined by a client may read. A server takes pipeline definitions over its
//! API, so a definition must not make it read its own files (`/etc/passwd`, its data dir) or
//! load code (librdkafka's `plugin.library.paths`). The operator names the folders file sources
//! may read and the Kafka properties beyond a safe set; everything else is refused when the
//! definition is applied, and again when a stored one starts (the folders may have changed).
//!
//! The CLI running a pipeline in its own process is the operator and is not confined; every
//! file source anywhere must still be a regular file (a device or a pipe never ends).

use std::path::{Path, PathBuf};

use kairos_store::{Result, StoreError};
use kairos_stream::SourceSpec;
use serde::{Deserialize, Serialize};

/// librdkafka consumer properties any definition may set: timeouts, fetch sizes, offsets and
/// credentials given inline. None names a file or a command.
const SAFE_KAFKA_PROPERTIES: &[&str] = &[
    "allow.auto.create.topics",
    "api.version.request",
    "auto.offset.reset",
    "broker.address.family",
    "check.crcs",
    "client.id",
    "client.rack",
    "enable.ssl.certificate.verification",
    "fetch.max.bytes",
    "fetch.min.bytes",
    "fetch.wait.max.ms",
    "group.instance.id",
    "heartbeat.interval.ms",
    "isolation.level",
    "max.partition.fetch.bytes",
    "max.poll.interval.ms",
    "metadata.max.age.ms",
    "partition.assignment.strategy",
    "queued.max.messages.kbytes",
    "queued.min.messages",
    "reconnect.backoff.max.ms",
    "reconnect.backoff.ms",
    "sasl.mechanism",
    "sasl.mechanisms",
    "sasl.password",
    "sasl.username",
    "security.protocol",
    "session.timeout.ms",
    "socket.keepalive.enable",
    "socket.timeout.ms",
    "ssl.endpoint.identification.algorithm",
    "statistics.interval.ms",
    "topic.metadata.refresh.interval.ms",
];

/// Properties no configuration allows: they load a library or run a command.
const FORBIDDEN_KAFKA_PROPERTIES: &[&str] = &["plugin.library.paths", "sasl.kerberos.kinit.cmd"];

/// The operator's settings (`[pipelines]` in `kairos.toml`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SourcePolicy {
    /// Folders whose files pipelines posted to the server may read; none allows no file
    /// source. The data dir is never readable, even inside one of them.
    pub source_dirs: Vec<PathBuf>,
    /// Kafka properties allowed beyond the safe set, e.g. `ssl.ca.location` (a path on the
    /// server: only an operator can allow one).
    pub kafka_properties: Vec<String>,
}

/// How far a set of pipelines trusts its definitions.
#[derive(Debug, Clone)]
pub enum Confinement {
    /// The operator's own process (the CLI): definitions read what they name.
    Trusted,
    /// A server: definitions come from clients and read only what the policy allows.
    Confined(SourcePolicy),
}

impl Confinement {
    /// Checks `source` before a pipeline is stored or started; a file source comes back with
    /// its path canonical, so what is opened is what was checked.
    pub fn check(&self, source: &SourceSpec, data_dir: &Path) -> Result<SourceSpec> {
        let policy = match self {
            Confinement::Trusted => {
                if let SourceSpec::File { path, .. } = source {
                    regular_file(Path::new(path))?;
                }
                return Ok(source.clone());
            }
            Confinement::Confined(policy) => policy,
        };
        match source {
            SourceSpec::File {
                path,
                format,
                speed,
            } => Ok(SourceSpec::File {
                path: policy
                    .file(Path::new(path), data_dir)?
                    .display()
                    .to_string(),
                format: format.clone(),
                speed: *speed,
            }),
            SourceSpec::Kafka { properties, .. } => {
                for name in properties.keys() {
                    policy.kafka_property(name)?;
                }
                Ok(source.clone())
            }
            SourceSpec::Http { .. } | SourceSpec::FeatureGroup { .. } => Ok(source.clone()),
        }
    }
}

fn refused(message: String) -> StoreError {
    StoreError::BadRequest(format!("source: {message}"))
}

/// The canonical path of `path` if it is a regular file (not a device, pipe or folder).
fn regular_file(path: &Path) -> Result<PathBuf> {
    let canonical = path
        .canonicalize()
        .map_err(|e| refused(format!("cannot read '{}': {e}", path.display())))?;
    let meta = std::fs::metadata(&canonical)
        .map_err(|e| refused(format!("cannot read '{}': {e}", path.display())))?;
    if !meta.is_file() {
        return Err(refused(format!(
            "'{}' is not a regular file (a device, pipe or folder never ends as a source)",
            path.display()
        )));
    }
    Ok(canonical)
}

impl SourcePolicy {
    fn file(&self, path: &Path, data_dir: &Path) -> Result<PathBuf> {
        if self.source_dirs.is_empty() {
            return Err(refused(
                "file sources are off on this server: its operator configured no \
                 pipelines.source_dirs"
                    .into(),
            ));
        }
        // Canonical paths: `..` and symlinks cannot lead out of a folder.
        let canonical = regular_file(path)?;
        if let Ok(data_dir) = data_dir.canonicalize()
            && canonical.starts_with(&data_dir)
        {
            return Err(refused(format!(
                "'{}' is inside the server's data dir, which no pipeline reads",
                path.display()
            )));
        }
        let inside = self.source_dirs.iter().any(|dir| {
            dir.canonicalize()
                .is_ok_and(|dir| canonical.starts_with(dir))
        });
        if !inside {
            return Err(refused(format!(
                "'{}' is outside the source folders this server reads ({})",
                path.display(),
                self.source_dirs
                    .iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        Ok(canonical)
    }

    fn kafka_property(&self, name: &str) -> Result<()> {
        if FORBIDDEN_KAFKA_PROPERTIES.contains(&name) {
            return Err(refused(format!(
                "Kafka property '{name}' loads code or runs a command; no pipeline may set it"
            )));
        }
        if SAFE_KAFKA_PROPERTIES.contains(&name) || self.kafka_properties.iter().any(|p| p == name)
        {
            return Ok(());
        }
        Err(refused(format!(
            "Kafka property '{name}' is not allowed here; the operator may allow it in \
             pipelines.kafka_properties"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &Path) -> SourceSpec {
        SourceSpec::File {
            path: path.display().to_string(),
            format: Some("csv".into()),
            speed: None,
        }
    }

    fn kafka(property: &str) -> SourceSpec {
        SourceSpec::Kafka {
            brokers: "127.0.0.1:9092".into(),
            topic: "t".into(),
            group: None,
            format: None,
            properties: [(property.to_string(), "x".to_string())].into(),
        }
    }

    #[test]
    fn file_sources_stay_inside_the_source_folders() {
        let root = tempfile::tempdir().unwrap();
        let sources = root.path().join("sources");
        let data_dir = sources.join("kairos-data");
        std::fs::create_dir_all(&data_dir).unwrap();
        let allowed = sources.join("events.csv");
        std::fs::write(&allowed, "a\n1\n").unwrap();
        let secret = root.path().join("secret.csv");
        std::fs::write(&secret, "a\n1\n").unwrap();
        std::fs::write(data_dir.join("catalog.db"), "x").unwrap();
        std::os::unix::fs::symlink(&secret, sources.join("link.csv")).unwrap();

        let confined = Confinement::Confined(SourcePolicy {
            source_dirs: vec![sources.clone()],
            kafka_properties: vec![],
        });
        let checked = confined.check(&file(&allowed), &data_dir).unwrap();
        assert_eq!(checked, file(&allowed.canonicalize().unwrap()));
        for (path, says) in [
            (PathBuf::from("/etc/passwd"), "outside the source folders"),
            (
                PathBuf::from("/proc/self/environ"),
                "outside the source folders",
            ),
            (sources.join("../secret.csv"), "outside the source folders"),
            (sources.join("link.csv"), "outside the source folders"),
            (data_dir.join("catalog.db"), "data dir"),
            (PathBuf::from("/dev/zero"), "not a regular file"),
            (sources.clone(), "not a regular file"),
            (sources.join("missing.csv"), "cannot read"),
        ] {
            let err = confined.check(&file(&path), &data_dir).unwrap_err();
            assert!(err.to_string().contains(says), "{}: {err}", path.display());
        }
        // No folder configured: no file source at all.
        let closed = Confinement::Confined(SourcePolicy::default());
        let err = closed.check(&file(&allowed), &data_dir).unwrap_err();
        assert!(err.to_string().contains("source_dirs"), "{err}");
        // The operator's own process reads any regular file, and no device.
        assert!(
            Confinement::Trusted
                .check(&file(&secret), &data_dir)
                .is_ok()
        );
        assert!(
            Confinement::Trusted
                .check(&file(Path::new("/dev/urandom")), &data_dir)
                .is_err()
        );
    }

    #[test]
    fn kafka_properties_pass_an_allow_list() {
        let data_dir = Path::new("/nonexistent");
        let policy = |extra: &[&str]| {
            Confinement::Confined(SourcePolicy {
                source_dirs: vec![],
                kafka_properties: extra.iter().map(|s| s.to_string()).collect(),
            })
        };
        assert!(
            policy(&[])
                .check(&kafka("session.timeout.ms"), data_dir)
                .is_ok()
        );
        assert!(policy(&[]).check(&kafka("sasl.password"), data_dir).is_ok());
        for name in [
            "plugin.library.paths",
            "ssl.ca.location",
            "ssl.key.location",
            "debug",
        ] {
            assert!(policy(&[]).check(&kafka(name), data_dir).is_err(), "{name}");
        }
        assert!(
            policy(&["ssl.ca.location"])
                .check(&kafka("ssl.ca.location"), data_dir)
                .is_ok()
        );
        // Not even an operator enables loading code.
        let err = policy(&["plugin.library.paths"])
            .check(&kafka("plugin.library.paths"), data_dir)
            .unwrap_err();
        assert!(err.to_string().contains("loads code"), "{err}");
    }
}
