//! Who a request acts as: the key pairs of the configuration file, each with
//! its project opened at start, and then those of the registry, whose
//! projects are opened on first use and kept in a small cache (least
//! recently used out). The S3 service (signatures and projects) and the
//! links share one [`Grants`], so a registered key pair is both an S3
//! credential and, when public, a link.

use std::collections::HashMap;
use std::sync::Mutex;

use archipel_client::{Access, Project};

use crate::registry::{Entry, Registry};
use crate::{Config, Error};

/// Registered projects kept open at once; more are opened again when used.
const OPENED_CAPACITY: usize = 64;

pub(crate) struct Grants {
    /// Per configured access key id: its secret and project.
    configured: HashMap<String, (String, Project)>,
    registry: Option<Registry>,
    opened: Mutex<Opened>,
}

/// The cache of registered projects.
#[derive(Default)]
struct Opened {
    entries: HashMap<String, Cached>,
    /// Ticks at every use, so the least recently used entry is the lowest.
    clock: u64,
}

struct Cached {
    project: Project,
    public: bool,
    used: u64,
}

impl Grants {
    /// Opens the project of every configured credential; a grant that does
    /// not parse or whose satellite cannot be reached stops the start.
    pub(crate) async fn open(config: &Config, registry: Option<Registry>) -> Result<Grants, Error> {
        let mut configured = HashMap::new();
        for credential in &config.credentials {
            let key_id = credential.access_key_id.clone();
            if configured.contains_key(&key_id) {
                return Err(Error::DuplicateAccessKey(key_id));
            }
            let project = open_project(&key_id, &credential.access).await?;
            configured.insert(key_id, (credential.secret_access_key.clone(), project));
        }
        Ok(Grants {
            configured,
            registry,
            opened: Mutex::default(),
        })
    }

    /// The secret of a key pair, configured or registered.
    pub(crate) async fn secret(&self, key_id: &str) -> Result<Option<String>, Error> {
        if let Some((secret, _)) = self.configured.get(key_id) {
            return Ok(Some(secret.clone()));
        }
        Ok(self
            .lookup(key_id)
            .await?
            .map(|entry| entry.secret_access_key))
    }

    /// The configured key pairs' access key ids and projects, in the order
    /// of their ids.
    pub(crate) fn configured(&self) -> Vec<(&str, &Project)> {
        let mut configured: Vec<_> = self
            .configured
            .iter()
            .map(|(key_id, (_, project))| (key_id.as_str(), project))
            .collect();
        configured.sort_by_key(|(key_id, _)| *key_id);
        configured
    }

    pub(crate) fn registry(&self) -> Option<&Registry> {
        self.registry.as_ref()
    }

    /// The project of any known key pair, configured or registered.
    pub(crate) async fn project(&self, key_id: &str) -> Result<Option<Project>, Error> {
        if let Some((_, project)) = self.configured.get(key_id) {
            return Ok(Some(project.clone()));
        }
        Ok(self.registered(key_id).await?.map(|(project, _)| project))
    }

    /// The project of a registration made public: what links serve. Key
    /// pairs of the configuration file are never public.
    pub(crate) async fn public_project(&self, key_id: &str) -> Result<Option<Project>, Error> {
        Ok(self
            .registered(key_id)
            .await?
            .and_then(|(project, public)| public.then_some(project)))
    }

    /// A registered key pair's project and public flag, from the cache or
    /// opened now.
    async fn registered(&self, key_id: &str) -> Result<Option<(Project, bool)>, Error> {
        if let Some(found) = self.cached(key_id) {
            return Ok(Some(found));
        }
        let Some(entry) = self.lookup(key_id).await? else {
            return Ok(None);
        };
        let project = open_project(key_id, &entry.access).await?;
        self.remember(key_id, project.clone(), entry.public);
        Ok(Some((project, entry.public)))
    }

    async fn lookup(&self, key_id: &str) -> Result<Option<Entry>, Error> {
        match &self.registry {
            Some(registry) => registry.lookup(key_id).await,
            None => Ok(None),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Opened> {
        // A cache stays valid whatever panicked while it was locked.
        self.opened
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn cached(&self, key_id: &str) -> Option<(Project, bool)> {
        let mut opened = self.lock();
        opened.clock += 1;
        let now = opened.clock;
        let cached = opened.entries.get_mut(key_id)?;
        cached.used = now;
        Some((cached.project.clone(), cached.public))
    }

    fn remember(&self, key_id: &str, project: Project, public: bool) {
        let mut opened = self.lock();
        opened.clock += 1;
        let used = opened.clock;
        if opened.entries.len() >= OPENED_CAPACITY && !opened.entries.contains_key(key_id) {
            let oldest = opened
                .entries
                .iter()
                .min_by_key(|(_, cached)| cached.used)
                .map(|(id, _)| id.clone());
            if let Some(oldest) = oldest {
                opened.entries.remove(&oldest);
            }
        }
        opened.entries.insert(
            key_id.to_string(),
            Cached {
                project,
                public,
                used,
            },
        );
    }
}

async fn open_project(key_id: &str, grant: &str) -> Result<Project, Error> {
    let access_error = |source| Error::Access {
        key_id: key_id.to_string(),
        source,
    };
    let access = Access::parse(grant).map_err(access_error)?;
    Project::open(&access).await.map_err(access_error)
}
