//! `trailspark admin owner-token|server-token`: credential recovery, offline.

use serde_json::json;
use trailspark_core::tenancy::OrgId;

use super::{open_control, AdminCmd};

pub async fn run(cmd: AdminCmd) -> anyhow::Result<()> {
    match cmd {
        AdminCmd::OwnerToken { log, org } => {
            let (control, _opened) = open_control(&log).await?;
            let (t, plaintext) = control.mint_owner_token(OrgId(org)).await?;
            println!(
                "{}",
                json!({"id": t.id, "org_id": t.org_id, "role": "owner", "token": plaintext})
            );
        }
        AdminCmd::ServerToken { log } => {
            let (control, _opened) = open_control(&log).await?;
            let plaintext = control.create_server_token().await?;
            println!("{}", json!({"server_admin": true, "token": plaintext}));
        }
    }
    Ok(())
}
