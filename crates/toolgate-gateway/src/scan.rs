//! Reading a server's whole tool list on the gateway's own behalf, for `toolgate scan`:
//! over Streamable HTTP or from a child process, with the same upstream code the proxy uses.

use crate::config::{ServerSpec, UpstreamSpec};
use crate::http_upstream::HttpUpstream;
use crate::session::Sessions;
use crate::stdio_upstream::StdioUpstream;
use serde_json::Value;
use std::sync::Arc;
use toolgate_store::{SessionRecord, SessionStore, StoreError};

/// Every tool `spec` offers (all pages), as its definitions.
pub async fn fetch_tools(spec: &ServerSpec) -> Result<Vec<Value>, String> {
    match &spec.upstream {
        UpstreamSpec::Http { .. } => {
            let upstream = HttpUpstream::new(&spec.name, &spec.upstream, spec.timeout)?;
            upstream.fetch_tools().await.map_err(|e| e.message)
        }
        UpstreamSpec::Stdio { .. } => {
            // A scan opens no client sessions; the child's own session needs none kept.
            let sessions = Arc::new(Sessions::restore(Arc::new(NoSessions), |_| false));
            let upstream = StdioUpstream::new(&spec.name, &spec.upstream, spec.timeout, sessions)?;
            let (stop, stopped) = tokio::sync::watch::channel(false);
            let supervisor = tokio::spawn(Arc::clone(&upstream).supervise(stopped));
            let tools = match upstream.initialize_result().await {
                Ok(_) => upstream.fetch_tools().await.map_err(|e| e.message),
                Err(e) => Err(e.message),
            };
            let _ = stop.send(true);
            let _ = supervisor.await;
            tools
        }
    }
}

/// Keeps no sessions (a scan has none to keep).
struct NoSessions;

impl SessionStore for NoSessions {
    fn save_session(&self, _: &SessionRecord) -> Result<(), StoreError> {
        Ok(())
    }

    fn delete_session(&self, _: &str) -> Result<(), StoreError> {
        Ok(())
    }

    fn load_sessions(&self) -> Result<Vec<SessionRecord>, StoreError> {
        Ok(Vec::new())
    }
}
