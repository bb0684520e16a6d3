//! A home for the agent in a temporary directory, and the CLI run against it.

use std::path::{Path, PathBuf};

use tempfile::TempDir;

use crate::{Agent, Cli, HarnessError, Out};

/// A home directory for the agent, inside a temporary directory removed on drop. The home
/// itself does not exist until the agent or a command creates it.
pub struct Home {
    _dir: TempDir,
    path: PathBuf,
    scratch: PathBuf,
}

impl Home {
    /// A fresh, not yet existing home; panics if no temporary directory can be made.
    pub fn new() -> Home {
        Home::try_new().unwrap_or_else(|e| panic!("{e}"))
    }

    /// A fresh, not yet existing home.
    pub fn try_new() -> Result<Home, HarnessError> {
        let io = |what: &str| {
            let what = what.to_owned();
            move |error| HarnessError::Process { what, error }
        };
        let dir = tempfile::Builder::new().prefix("optin-it-").tempdir().map_err(io("make a temporary directory"))?;
        let path = dir.path().join("home");
        let scratch = dir.path().join("scratch");
        std::fs::create_dir(&scratch).map_err(io("make the scratch directory"))?;
        Ok(Home { _dir: dir, path, scratch })
    }

    /// The home's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A path for scratch files (batches, logs, profiles) next to, not inside, the home.
    pub fn scratch(&self, name: &str) -> PathBuf {
        self.scratch.join(name)
    }

    /// `optin --home HOME ARGS…`, to be given standard input or environment, then run.
    pub fn command(&self, args: &[&str]) -> Cli<'_> {
        Cli::new(self, args)
    }

    /// Runs `optin --home HOME ARGS…` and waits for it (bounded).
    pub async fn cli(&self, args: &[&str]) -> Out {
        self.command(args).run().await
    }

    /// Starts `optin serve --listen 127.0.0.1:0 EXTRA…` and waits for its ready line; panics
    /// if it does not get ready.
    pub async fn serve(self, extra: &[&str]) -> Agent {
        self.try_serve(extra).await.unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts `optin serve --listen 127.0.0.1:0 EXTRA…` and waits for its ready line.
    pub async fn try_serve(self, extra: &[&str]) -> Result<Agent, HarnessError> {
        Agent::launch(self, extra, None).await
    }

    /// Starts the agent like [`Home::serve`], logging with the filter `OPTIN_LOG=filter`.
    pub async fn serve_logging(self, filter: &str, extra: &[&str]) -> Agent {
        Agent::launch(self, extra, Some(filter)).await.unwrap_or_else(|e| panic!("{e}"))
    }
}

impl Default for Home {
    fn default() -> Home {
        Home::new()
    }
}
