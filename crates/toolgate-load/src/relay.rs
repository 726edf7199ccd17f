//! Row (r): a plain TCP relay in a process of its own. It parses nothing and decides
//! nothing, so what it adds over the direct path is what any proxy process adds on this
//! machine — two more socket hops and the wake-ups of a third process — the floor under
//! what toolgate can add.

use tokio::net::{TcpListener, TcpStream};

/// Accepts on `listen` and copies each connection both ways to a fresh connection to `to`.
pub async fn serve(listen: &str, to: &str) -> Result<(), String> {
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| format!("relay: cannot listen on {listen}: {e}"))?;
    loop {
        let (mut client, _) = listener
            .accept()
            .await
            .map_err(|e| format!("relay: accept: {e}"))?;
        let to = to.to_owned();
        tokio::spawn(async move {
            let Ok(mut upstream) = TcpStream::connect(&to).await else {
                return;
            };
            let _ = (client.set_nodelay(true), upstream.set_nodelay(true));
            let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
        });
    }
}
