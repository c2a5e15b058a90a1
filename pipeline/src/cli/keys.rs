//! `trailspark keys create|list|revoke`.

use anyhow::{bail, Context};
use serde_json::json;
use trailspark::control::NewKey;
use trailspark::http::key_json;
use trailspark_core::tenancy::{EndpointType, OrgId, ProductOrgTemplate};

use super::{open_control, KeysCmd};

pub async fn run(cmd: KeysCmd) -> anyhow::Result<()> {
    let now = chrono::Utc::now().timestamp_millis();
    match cmd {
        KeysCmd::Create {
            log,
            org,
            name,
            endpoint_type,
            secret,
            expires_at,
            template,
            allowed_origins,
        } => {
            let endpoint_type = match endpoint_type.as_str() {
                "signal_staging" => EndpointType::SignalStaging,
                "product_org" => EndpointType::ProductOrg,
                other => {
                    bail!("--endpoint-type must be signal_staging or product_org, not {other}")
                }
            };
            let expires_at = expires_at
                .map(|s| chrono::DateTime::parse_from_rfc3339(&s).map(|t| t.timestamp_millis()))
                .transpose()
                .context("--expires-at must be RFC 3339")?;
            let template: Option<ProductOrgTemplate> = template
                .map(|t| serde_json::from_str(&t))
                .transpose()
                .context("--template must be a JSON template")?;
            let (control, _opened) = open_control(&log).await?;
            let created = control
                .create_key(
                    OrgId(org),
                    NewKey {
                        name,
                        endpoint_type,
                        secret,
                        expires_at,
                        template,
                        allowed_origins,
                    },
                )
                .await?;
            let mut v = key_json(&created.key, now);
            v["key"] = json!(created.plaintext);
            if let Some(s) = created.secret {
                v["secret"] = json!(s);
            }
            println!("{v}");
        }
        KeysCmd::List { log, org } => {
            let (control, _opened) = open_control(&log).await?;
            for k in control.registry.read().unwrap().keys_of(OrgId(org)) {
                println!("{}", key_json(k, now));
            }
        }
        KeysCmd::Revoke { log, org, id } => {
            let (control, _opened) = open_control(&log).await?;
            let k = control.revoke_key(OrgId(org), id).await?;
            println!("{}", key_json(&k, now));
        }
    }
    Ok(())
}
