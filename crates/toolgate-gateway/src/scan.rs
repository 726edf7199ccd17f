//! Reading a server's whole tool list on the gateway's own behalf, for `toolgate scan`:
//! over Streamable HTTP or from a child process, with the same upstream code the proxy uses.

use crate::catalogue::ToolList;
use crate::config::{ServerSpec, UpstreamSpec};
use crate::http_upstream::HttpUpstream;
use crate::session::Sessions;
use crate::stdio_upstream::StdioUpstream;
use std::sync::Arc;
use toolgate_store::{SessionRecord, SessionStore, StoreError};

/// Every tool `spec` offers (all pages), as its definitions; when a page fails, what was
/// read before it and why it stopped. An error: not even the first page could be asked for.
pub async fn fetch_tools(spec: &ServerSpec) -> Result<ToolList, String> {
    match &spec.upstream {
        UpstreamSpec::Http { .. } => {
            let upstream = HttpUpstream::new(spec)?;
            upstream.read_tools().await.map_err(|e| e.message)
        }
        UpstreamSpec::Stdio { .. } => {
            // A scan opens no client sessions; the child's own session needs none kept.
            let sessions = Arc::new(Sessions::restore(Arc::new(NoSessions), |_| false));
            let upstream = StdioUpstream::new(spec, sessions)?;
            let (stop, stopped) = tokio::sync::watch::channel(false);
            // One life, no restarts: a program that cannot start, or exits, is reported at
            // once instead of after the whole timeout.
            let mut life = tokio::spawn(Arc::clone(&upstream).run_once(stopped));
            let tools = tokio::select! {
                ready = upstream.initialize_result() => match ready {
                    Ok(_) => Ok(upstream.read_tools().await),
                    Err(e) => Err(e.message),
                },
                ended = &mut life => {
                    return Err(match ended {
                        Ok(Err(e)) => e,
                        Ok(Ok(status)) => format!("the server exited before it answered ({status})"),
                        Err(e) => format!("the server's supervisor failed: {e}"),
                    });
                }
            };
            let _ = stop.send(true);
            let _ = life.await;
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
