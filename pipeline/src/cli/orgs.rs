//! `trailspark orgs create|list`.

use serde_json::json;
use trailspark_core::time::rfc3339;

use super::{open_control, OrgsCmd};

pub async fn run(cmd: OrgsCmd) -> anyhow::Result<()> {
    match cmd {
        OrgsCmd::Create { log, name } => {
            let (control, _opened) = open_control(&log).await?;
            let (org, token) = control.create_org(&name).await?;
            println!(
                "{}",
                json!({"id": org.id, "name": org.name, "owner_token": token})
            );
        }
        OrgsCmd::List { log } => {
            let (control, _opened) = open_control(&log).await?;
            for o in control.registry.read().unwrap().orgs() {
                println!(
                    "{}",
                    json!({"id": o.id, "name": o.name, "created_at": rfc3339(o.created_at)})
                );
            }
        }
    }
    Ok(())
}
