//! Who may do what: API keys with scopes, optionally limited to named feature groups and
//! deployments.
//!
//! A key is `kairos_<id>_<secret>`. The catalog keeps its definition and the SHA-256 digest of
//! its secret as a service document (kind [`KIND`], named by the id), never the secret: a
//! stolen catalog grants nothing. The secrets are 256 random bits, so a fast digest is enough
//! (there is nothing to brute-force as with passwords); digests are compared in constant time.
//! A revoked key stays in the catalog, marked, so listings keep its history.
//!
//! [`Keys`] is the service: it issues, lists and revokes keys through a [`Catalog`] and answers
//! [`Keys::authenticate`] from an in-memory copy, swapped whole on every change. [`Principal`]
//! is who a request comes from and [`Principal::check`] says whether it may do what a route
//! [`Need`]s; the server maps every route to its need in one place.
//!
//! With no active key the deployment is open (Redis's protected mode): every caller is
//! [`Principal::Open`], and the server then listens on loopback only.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use arc_swap::ArcSwap;
use kairos_catalog::{Catalog, CatalogError};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use utoipa::ToSchema;

/// The catalog's service-document kind for API keys.
pub const KIND: &str = "api_key";

const TOKEN_PREFIX: &str = "kairos_";
const ID_BYTES: usize = 6;
const SECRET_BYTES: usize = 32;
const MAX_NAME: usize = 128;

/// What a key may do. `admin` includes `read` and `write`; `read` and `write` are separate, so
/// a producer's key cannot read what it writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Online reads, offline reads, vectors, nearest neighbours, predictions,
    /// recommendations, and listing definitions.
    Read,
    /// Inserts, stream pushes and interactions.
    Write,
    /// Definitions (create, apply, delete), training, registration and keys.
    Admin,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Write => "write",
            Scope::Admin => "admin",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an administrator asks for when creating a key.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeySpec {
    /// Who or what holds the key (`fraud-scorer`, `ingest-job`), for listings.
    pub name: String,
    /// At least one of `read`, `write`, `admin`.
    pub scopes: Vec<Scope>,
    /// When set, the key reaches only these feature groups (and no other kind of object but
    /// the deployments below).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feature_groups: Option<Vec<String>>,
    /// When set, the key reaches only these deployments and recommenders.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployments: Option<Vec<String>>,
}

impl KeySpec {
    fn validate(&self) -> Result<(), AuthError> {
        let invalid = |m: String| Err(AuthError::Invalid(m));
        if self.name.trim().is_empty() || self.name.len() > MAX_NAME {
            return invalid(format!(
                "name: expected 1 to {MAX_NAME} characters, got {}",
                self.name.len()
            ));
        }
        if self.name.chars().any(char::is_control) {
            return invalid("name: control characters are not allowed".into());
        }
        if self.scopes.is_empty() {
            return invalid("scopes: expected at least one of read, write, admin".into());
        }
        for (field, names) in [
            ("feature_groups", &self.feature_groups),
            ("deployments", &self.deployments),
        ] {
            if let Some(names) = names
                && (names.is_empty() || names.iter().any(|n| n.trim().is_empty()))
            {
                return invalid(format!(
                    "{field}: expected a list of names (leave it out for no limit)"
                ));
            }
        }
        Ok(())
    }

    fn limited(&self) -> bool {
        self.feature_groups.is_some() || self.deployments.is_some()
    }
}

/// A key as listings show it: everything but its secret.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ApiKey {
    /// The public part of the key, which names it in listings, revocations and logs.
    pub id: String,
    #[serde(flatten)]
    pub spec: KeySpec,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339; a revoked key authenticates nobody.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<String>,
}

impl ApiKey {
    pub fn is_active(&self) -> bool {
        self.revoked_at.is_none()
    }
}

/// A newly issued key: the only time its secret is shown.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct IssuedKey {
    #[serde(flatten)]
    pub key: ApiKey,
    /// The whole key, to send as `Authorization: Bearer <key>`. Not stored; not shown again.
    pub token: String,
}

/// The catalog's record: the key and the digest of its secret.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredKey {
    #[serde(flatten)]
    key: ApiKey,
    secret_sha256: String,
}

/// A stored key ready to be checked against.
#[derive(Debug)]
struct Entry {
    key: Arc<ApiKey>,
    digest: [u8; 32],
}

/// What a route touches, for keys limited to named objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target<'a> {
    /// The server itself (its metrics, its V2 metadata): any key with the scope.
    Server,
    /// The catalog as a whole (listings, new definitions) or an object no limit can name
    /// (views, pipelines, models, monitors, streams, keys): only keys without limits.
    Definitions,
    FeatureGroup(&'a str),
    /// A deployment or a recommender (both are served as deployments).
    Deployment(&'a str),
}

impl fmt::Display for Target<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Server => f.write_str("the server"),
            Target::Definitions => f.write_str("definitions"),
            Target::FeatureGroup(name) => write!(f, "feature group '{name}'"),
            Target::Deployment(name) => write!(f, "deployment '{name}'"),
        }
    }
}

/// What a request needs: a scope over a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Need<'a> {
    pub scope: Scope,
    pub target: Target<'a>,
}

impl<'a> Need<'a> {
    pub fn new(scope: Scope, target: Target<'a>) -> Self {
        Self { scope, target }
    }
}

/// Who a request comes from.
#[derive(Debug, Clone)]
pub enum Principal {
    /// No key is configured: the deployment is open, and reachable only from this machine
    /// unless its operator said otherwise.
    Open,
    Key(Arc<ApiKey>),
}

impl Principal {
    /// Whether this caller may do what `need` says.
    pub fn check(&self, need: Need<'_>) -> Result<(), Denial> {
        let Principal::Key(key) = self else {
            return Ok(());
        };
        let scopes = &key.spec.scopes;
        if !scopes.contains(&need.scope) && !scopes.contains(&Scope::Admin) {
            return Err(Denial::MissingScope {
                key: key.id.clone(),
                needed: need.scope,
            });
        }
        if !key.spec.limited() {
            return Ok(());
        }
        let listed = |names: &Option<Vec<String>>, name: &str| {
            names.as_ref().is_some_and(|n| n.iter().any(|n| n == name))
        };
        let within = match need.target {
            Target::Server => true,
            Target::Definitions => false,
            Target::FeatureGroup(name) => listed(&key.spec.feature_groups, name),
            Target::Deployment(name) => listed(&key.spec.deployments, name),
        };
        if within {
            Ok(())
        } else {
            Err(Denial::OutsideLimits {
                key: key.id.clone(),
                target: need.target.to_string(),
            })
        }
    }

    /// The key's id, for logs; `None` when the deployment is open.
    pub fn key_id(&self) -> Option<&str> {
        match self {
            Principal::Open => None,
            Principal::Key(key) => Some(&key.id),
        }
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denial {
    #[error("an API key is required: send 'Authorization: Bearer <key>'")]
    MissingKey,
    #[error("the API key is not valid (unknown, revoked or malformed)")]
    InvalidKey,
    #[error("key {key} lacks the '{needed}' scope this request needs")]
    MissingScope { key: String, needed: Scope },
    #[error("key {key} is limited to named objects, and {target} is not among them")]
    OutsideLimits { key: String, target: String },
}

impl Denial {
    /// True for "who are you?" (401), false for "you may not" (403).
    pub fn is_unauthenticated(&self) -> bool {
        matches!(self, Denial::MissingKey | Denial::InvalidKey)
    }

    /// A stable code for clients and the denial metric.
    pub fn code(&self) -> &'static str {
        match self {
            Denial::MissingKey => "missing_key",
            Denial::InvalidKey => "invalid_key",
            Denial::MissingScope { .. } => "missing_scope",
            Denial::OutsideLimits { .. } => "outside_limits",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("invalid key definition: {0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error("the catalog holds an unreadable API key '{id}': {reason}")]
    Corrupt { id: String, reason: String },
}

/// The key service: issues, lists and revokes keys in the catalog, and authenticates requests
/// against an in-memory copy of the active ones.
#[derive(Debug)]
pub struct Keys {
    by_id: ArcSwap<HashMap<String, Entry>>,
}

impl Keys {
    /// Reads every key from the catalog.
    pub fn load(catalog: &dyn Catalog) -> Result<Keys, AuthError> {
        let keys = Keys {
            by_id: ArcSwap::from_pointee(HashMap::new()),
        };
        keys.reload(catalog)?;
        Ok(keys)
    }

    /// Reads the catalog again (after a change made by another process).
    pub fn reload(&self, catalog: &dyn Catalog) -> Result<(), AuthError> {
        let mut by_id = HashMap::new();
        for (id, _, body) in catalog.list_service_documents(KIND)? {
            let corrupt = |reason: String| AuthError::Corrupt {
                id: id.clone(),
                reason,
            };
            let stored: StoredKey =
                serde_json::from_value(body).map_err(|e| corrupt(e.to_string()))?;
            let mut digest = [0u8; 32];
            hex::decode_to_slice(&stored.secret_sha256, &mut digest)
                .map_err(|e| corrupt(format!("secret digest: {e}")))?;
            by_id.insert(
                id,
                Entry {
                    key: Arc::new(stored.key),
                    digest,
                },
            );
        }
        self.by_id.store(Arc::new(by_id));
        Ok(())
    }

    /// Whether any key is active: then every request must carry one.
    pub fn enforced(&self) -> bool {
        self.by_id.load().values().any(|e| e.key.is_active())
    }

    /// Issues a key; its token is in the answer and nowhere else.
    pub fn create(&self, catalog: &dyn Catalog, spec: KeySpec) -> Result<IssuedKey, AuthError> {
        spec.validate()?;
        let mut rng = rand::rng();
        let mut id = [0u8; ID_BYTES];
        let mut secret = [0u8; SECRET_BYTES];
        rng.fill_bytes(&mut id);
        rng.fill_bytes(&mut secret);
        let id = hex::encode(id);
        let secret = hex::encode(secret);
        let key = ApiKey {
            id: id.clone(),
            spec,
            created_at: now(),
            revoked_at: None,
        };
        let stored = StoredKey {
            key: key.clone(),
            secret_sha256: hex::encode(Sha256::digest(secret.as_bytes())),
        };
        let body = serde_json::to_value(&stored).expect("a key serialises");
        catalog.put_service_document(KIND, &id, &body)?;
        self.reload(catalog)?;
        Ok(IssuedKey {
            key,
            token: format!("{TOKEN_PREFIX}{id}_{secret}"),
        })
    }

    /// Every key, revoked ones too, by creation time.
    pub fn list(&self) -> Vec<ApiKey> {
        let mut keys: Vec<ApiKey> = self
            .by_id
            .load()
            .values()
            .map(|e| ApiKey::clone(&e.key))
            .collect();
        keys.sort_by(|a, b| (&a.created_at, &a.id).cmp(&(&b.created_at, &b.id)));
        keys
    }

    /// Revokes a key for good; it stays listed with its revocation time.
    pub fn revoke(&self, catalog: &dyn Catalog, id: &str) -> Result<ApiKey, AuthError> {
        let not_found = || AuthError::NotFound(format!("API key '{id}' not found"));
        let (_, body) = catalog
            .get_service_document(KIND, id, None)?
            .ok_or_else(not_found)?;
        let mut stored: StoredKey =
            serde_json::from_value(body).map_err(|e| AuthError::Corrupt {
                id: id.to_string(),
                reason: e.to_string(),
            })?;
        if stored.key.revoked_at.is_none() {
            stored.key.revoked_at = Some(now());
            let body = serde_json::to_value(&stored).expect("a key serialises");
            catalog.put_service_document(KIND, id, &body)?;
            self.reload(catalog)?;
        }
        Ok(stored.key)
    }

    /// Who sent a request with this `Authorization` header value (or none).
    pub fn authenticate(&self, authorization: Option<&str>) -> Result<Principal, Denial> {
        let by_id = self.by_id.load();
        if !by_id.values().any(|e| e.key.is_active()) {
            return Ok(Principal::Open);
        }
        let token = authorization
            .and_then(bearer_token)
            .ok_or(Denial::MissingKey)?;
        let (id, secret) = token
            .strip_prefix(TOKEN_PREFIX)
            .and_then(|rest| rest.split_once('_'))
            .ok_or(Denial::InvalidKey)?;
        let entry = by_id.get(id).ok_or(Denial::InvalidKey)?;
        let digest = Sha256::digest(secret.as_bytes());
        let matches: bool = entry.digest.ct_eq(digest.as_slice()).into();
        if !matches || !entry.key.is_active() {
            return Err(Denial::InvalidKey);
        }
        Ok(Principal::Key(entry.key.clone()))
    }
}

/// The token of a `Bearer` credential (the scheme is case-insensitive, RFC 9110).
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kairos_catalog::SqliteCatalog;

    fn spec(scopes: &[Scope]) -> KeySpec {
        KeySpec {
            name: "test".into(),
            scopes: scopes.to_vec(),
            feature_groups: None,
            deployments: None,
        }
    }

    fn bearer(token: &str) -> String {
        format!("Bearer {token}")
    }

    #[test]
    fn without_keys_everyone_is_open_and_the_first_key_closes_the_door() {
        let catalog = SqliteCatalog::in_memory().unwrap();
        let keys = Keys::load(&catalog).unwrap();
        assert!(!keys.enforced());
        assert!(matches!(keys.authenticate(None), Ok(Principal::Open)));

        let issued = keys.create(&catalog, spec(&[Scope::Read])).unwrap();
        assert!(keys.enforced());
        assert_eq!(keys.authenticate(None).unwrap_err(), Denial::MissingKey);
        let principal = keys.authenticate(Some(&bearer(&issued.token))).unwrap();
        assert_eq!(principal.key_id(), Some(issued.key.id.as_str()));
        // The scheme is case-insensitive.
        assert!(
            keys.authenticate(Some(&format!("bearer {}", issued.token)))
                .is_ok()
        );
    }

    #[test]
    fn the_catalog_keeps_a_digest_never_the_secret() {
        let catalog = SqliteCatalog::in_memory().unwrap();
        let keys = Keys::load(&catalog).unwrap();
        let issued = keys.create(&catalog, spec(&[Scope::Admin])).unwrap();
        let secret = issued.token.rsplit('_').next().unwrap();
        let (_, body) = catalog
            .get_service_document(KIND, &issued.key.id, None)
            .unwrap()
            .unwrap();
        let text = body.to_string();
        assert!(!text.contains(secret), "{text}");
        assert!(text.contains(&hex::encode(Sha256::digest(secret.as_bytes()))));
        // A second service over the same catalog (a restart) knows the key.
        let again = Keys::load(&catalog).unwrap();
        assert!(again.authenticate(Some(&bearer(&issued.token))).is_ok());
    }

    #[test]
    fn wrong_malformed_and_revoked_keys_are_refused() {
        let catalog = SqliteCatalog::in_memory().unwrap();
        let keys = Keys::load(&catalog).unwrap();
        let issued = keys.create(&catalog, spec(&[Scope::Read])).unwrap();
        let other = keys.create(&catalog, spec(&[Scope::Read])).unwrap();
        let (prefix, _) = issued.token.rsplit_once('_').unwrap();
        let forged = format!("{prefix}_{}", "0".repeat(64));
        for header in [
            bearer(&forged),
            bearer("kairos_nothing"),
            bearer(""),
            format!("Basic {}", issued.token),
            issued.token.clone(),
            "Bearer".into(),
        ] {
            assert_eq!(
                keys.authenticate(Some(&header)).unwrap_err(),
                if header.starts_with("Bearer ") && header.len() > 7 {
                    Denial::InvalidKey
                } else {
                    Denial::MissingKey
                },
                "{header}"
            );
        }
        let revoked = keys.revoke(&catalog, &issued.key.id).unwrap();
        assert!(revoked.revoked_at.is_some());
        assert_eq!(
            keys.authenticate(Some(&bearer(&issued.token))).unwrap_err(),
            Denial::InvalidKey
        );
        assert!(keys.authenticate(Some(&bearer(&other.token))).is_ok());
        assert_eq!(keys.list().len(), 2, "a revoked key stays listed");
        assert!(matches!(
            keys.revoke(&catalog, "nope"),
            Err(AuthError::NotFound(_))
        ));
        // With every key revoked, the deployment is open again.
        keys.revoke(&catalog, &other.key.id).unwrap();
        assert!(!keys.enforced());
    }

    #[test]
    fn scopes_and_limits_decide_together() {
        let key = |scopes: &[Scope], groups: Option<&[&str]>, deployments: Option<&[&str]>| {
            let names = |n: Option<&[&str]>| n.map(|n| n.iter().map(|s| s.to_string()).collect());
            Principal::Key(Arc::new(ApiKey {
                id: "k".into(),
                spec: KeySpec {
                    name: "k".into(),
                    scopes: scopes.to_vec(),
                    feature_groups: names(groups),
                    deployments: names(deployments),
                },
                created_at: now(),
                revoked_at: None,
            }))
        };
        let need = Need::new;
        let reader = key(&[Scope::Read], None, None);
        assert!(reader.check(need(Scope::Read, Target::Definitions)).is_ok());
        assert!(matches!(
            reader.check(need(Scope::Write, Target::FeatureGroup("cards"))),
            Err(Denial::MissingScope {
                needed: Scope::Write,
                ..
            })
        ));
        let admin = key(&[Scope::Admin], None, None);
        for scope in [Scope::Read, Scope::Write, Scope::Admin] {
            assert!(admin.check(need(scope, Target::Definitions)).is_ok());
        }
        let writer = key(&[Scope::Write], None, None);
        assert!(writer.check(need(Scope::Read, Target::Server)).is_err());

        let scorer = key(&[Scope::Read], Some(&["cards"]), Some(&["fraud"]));
        assert!(
            scorer
                .check(need(Scope::Read, Target::FeatureGroup("cards")))
                .is_ok()
        );
        assert!(
            scorer
                .check(need(Scope::Read, Target::Deployment("fraud")))
                .is_ok()
        );
        assert!(scorer.check(need(Scope::Read, Target::Server)).is_ok());
        for target in [
            Target::FeatureGroup("payments"),
            Target::Deployment("other"),
            Target::Definitions,
        ] {
            assert!(
                matches!(
                    scorer.check(need(Scope::Read, target)),
                    Err(Denial::OutsideLimits { .. })
                ),
                "{target}"
            );
        }
        // A key limited to deployments reaches no feature group.
        let serving = key(&[Scope::Read], None, Some(&["fraud"]));
        assert!(
            serving
                .check(need(Scope::Read, Target::FeatureGroup("cards")))
                .is_err()
        );
        assert!(
            Principal::Open
                .check(need(Scope::Admin, Target::Definitions))
                .is_ok()
        );
    }

    #[test]
    fn key_definitions_are_checked() {
        let catalog = SqliteCatalog::in_memory().unwrap();
        let keys = Keys::load(&catalog).unwrap();
        let bad = [
            spec(&[]),
            KeySpec {
                name: " ".into(),
                ..spec(&[Scope::Read])
            },
            KeySpec {
                feature_groups: Some(vec![]),
                ..spec(&[Scope::Read])
            },
            KeySpec {
                name: "a\r\nb".into(),
                ..spec(&[Scope::Read])
            },
        ];
        for spec in bad {
            assert!(matches!(
                keys.create(&catalog, spec),
                Err(AuthError::Invalid(_))
            ));
        }
        assert!(
            keys.list().is_empty(),
            "a refused definition stores nothing"
        );
        let json = r#"{"name":"x","scopes":["read","root"]}"#;
        assert!(serde_json::from_str::<KeySpec>(json).is_err());
    }
}
