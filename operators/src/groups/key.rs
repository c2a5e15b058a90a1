//! Signal groups: the grouping key of a staged signal and the group title.
//!
//! Key: (source, event, path, form, content descriptor, content type). The derivation is ours
//! (the product documents only the title format, the sort and the sample preference):
//! - event: the Segment call type, except that for `track` calls the event name is used (a
//!   group titled `track` would say nothing);
//! - path: the URL path of `properties.page_url`, `properties.url`, `context.page.path` or
//!   `context.page.url`, with slashes trimmed, inner `/` and `-` turned into `_`
//!   (`/pricing-page/` → `pricing_page`);
//! - form: `properties.form_id`, else `properties.form_name`;
//! - content type: `webinar` when a webinar key is present, `asset` for downloads and asset
//!   keys, `webpage` for page views, else `action`;
//! - descriptor: the form name/id, asset name, webinar name, or page title.

use std::cell::RefCell;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use trailspark_core::path;

use crate::intern::Interner;

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct GroupKey {
    pub source: String,
    pub event: String,
    pub path: Option<String>,
    pub form: Option<String>,
    pub descriptor: Option<String>,
    pub content_type: ContentType,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ContentType {
    Asset,
    Webinar,
    Webpage,
    Action,
}

impl ContentType {
    pub fn as_str(self) -> &'static str {
        match self {
            ContentType::Asset => "asset",
            ContentType::Webinar => "webinar",
            ContentType::Webpage => "webpage",
            ContentType::Action => "action",
        }
    }
}

/// The shared copy of `key`: one allocation per distinct key and worker thread instead of
/// five strings per signal. Every staged signal is a group member keyed by its group key, and
/// groups are few next to signals, so the group arrangements hold mostly pointers.
///
/// Keys no arrangement holds any more are swept out (see [`Interner`]).
pub fn interned(key: GroupKey) -> Arc<GroupKey> {
    thread_local! {
        static TABLE: RefCell<Interner<GroupKey>> = RefCell::new(Interner::default());
    }
    TABLE.with(|t| {
        let mut t = t.borrow_mut();
        match t.get(&key) {
            Some(k) => k,
            None => t.insert(Arc::new(key)),
        }
    })
}

fn first(payload: &Value, paths: &[&str]) -> Option<String> {
    paths.iter().find_map(|p| path::get_str(payload, p))
}

/// The path part of a URL or path, normalized as the module docs say.
pub fn normalize_path(url_or_path: &str) -> Option<String> {
    let s = url_or_path.trim();
    let after_scheme = s.split_once("://").map_or(s, |(_, rest)| rest);
    let path = if s.contains("://") {
        after_scheme.find('/').map_or("", |i| &after_scheme[i..])
    } else {
        after_scheme
    };
    let path = path.split(['?', '#']).next().unwrap_or("");
    let p = path.trim_matches('/').replace(['/', '-'], "_");
    (!p.is_empty()).then_some(p)
}

/// The group key of a signal with these source, event type and name, and payload.
pub fn group_key(
    source: &str,
    event_type: &str,
    event_name: Option<&str>,
    payload: &Value,
) -> GroupKey {
    let event = match (event_type, event_name) {
        ("track", Some(name)) => name.to_string(),
        (t, _) => t.to_string(),
    };
    let path = first(
        payload,
        &[
            "properties.page_url",
            "properties.url",
            "context.page.path",
            "context.page.url",
        ],
    )
    .and_then(|u| normalize_path(&u));
    let form = first(payload, &["properties.form_id", "properties.form_name"]);
    let webinar = first(payload, &["properties.webinar_name", "properties.webinar"]);
    let asset = first(
        payload,
        &[
            "properties.asset_name",
            "properties.file_name",
            "properties.asset",
        ],
    );
    let ev = event.to_lowercase();
    let content_type = if webinar.is_some() {
        ContentType::Webinar
    } else if asset.is_some() || ev.contains("download") {
        ContentType::Asset
    } else if event_type == "page"
        || event_type == "screen"
        || ev.contains("page_view")
        || ev.contains("page view")
        || ev.contains("pageview")
    {
        ContentType::Webpage
    } else {
        ContentType::Action
    };
    let descriptor = first(payload, &["properties.form_name", "properties.form_id"])
        .or(asset)
        .or(webinar)
        .or_else(|| {
            first(
                payload,
                &[
                    "properties.page_title",
                    "properties.title",
                    "context.page.title",
                ],
            )
        })
        .or_else(|| {
            if event_type == "page" {
                event_name.map(str::to_string)
            } else {
                None
            }
        });
    GroupKey {
        source: source.to_string(),
        event,
        path,
        form,
        descriptor,
        content_type,
    }
}

/// `[EventType] - [ContentDescriptor] ([Path]) [ContentType]`, empty parts left out.
pub fn title(k: &GroupKey) -> String {
    let mut t = k.event.clone();
    if let Some(d) = &k.descriptor {
        t.push_str(" - ");
        t.push_str(d);
    }
    if let Some(p) = &k.path {
        t.push_str(&format!(" ({p})"));
    }
    t.push_str(&format!(" [{}]", k.content_type.as_str()));
    t
}

/// The stable id of an org's group: the same for as long as the group's key is, across
/// restarts and replays (`sg_` and 16 hex digits of a SHA-256 over the org and the key).
pub fn group_id(org: u64, k: &GroupKey) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(org.to_le_bytes());
    for part in [
        Some(k.source.as_str()),
        Some(k.event.as_str()),
        k.path.as_deref(),
        k.form.as_deref(),
        k.descriptor.as_deref(),
        Some(k.content_type.as_str()),
    ] {
        match part {
            Some(p) => {
                h.update([1]);
                h.update(p.as_bytes());
            }
            None => h.update([0]),
        }
        h.update([0xff]);
    }
    format!("sg_{}", &hex::encode(h.finalize())[..16])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::Arc;

    /// The key of a Segment signal of this event type, its event name from the payload.
    fn key(event_type: &str, payload: &Value) -> GroupKey {
        group_key(
            "segment",
            event_type,
            payload.get("event").and_then(Value::as_str),
            payload,
        )
    }

    #[test]
    fn spec_title_examples() {
        let p = json!({"event": "form_submit", "properties": {"form_name": "ContactForm", "page_url": "https://x.io/pricing-page/"}});
        assert_eq!(
            title(&key("form_submit", &p)),
            "form_submit - ContactForm (pricing_page) [action]"
        );
        let p = json!({"type": "identify"});
        assert_eq!(title(&key("identify", &p)), "identify [action]");
        let p = json!({"event": "page_view", "properties": {"url": "/dashboard"}});
        assert_eq!(
            title(&key("page_view", &p)),
            "page_view (dashboard) [webpage]"
        );
        let p = json!({"event": "download", "properties": {"asset_name": "Whitepaper"}});
        assert_eq!(title(&key("download", &p)), "download - Whitepaper [asset]");
        let p = json!({"event": "Registered", "properties": {"webinar_name": "Q3 Launch"}});
        assert_eq!(key("track", &p).content_type, ContentType::Webinar);
    }

    #[test]
    fn paths() {
        assert_eq!(
            normalize_path("https://a.io/pricing-page/?x=1").as_deref(),
            Some("pricing_page")
        );
        assert_eq!(
            normalize_path("/docs/api/v2").as_deref(),
            Some("docs_api_v2")
        );
        assert_eq!(normalize_path("https://a.io"), None);
        assert_eq!(normalize_path("/"), None);
    }

    #[test]
    fn equal_keys_share_one_copy_and_dropped_keys_are_swept() {
        let key = |i: usize| GroupKey {
            source: "segment".into(),
            event: "page".into(),
            path: Some(format!("p{i}")),
            form: None,
            descriptor: None,
            content_type: ContentType::Webpage,
        };
        let a = interned(key(1));
        let b = interned(key(1));
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &interned(key(2))));
        // Thousands of keys nobody holds: the sweeps drop them, the held one survives and is
        // still the copy handed out.
        for i in 10..5000 {
            interned(key(i));
        }
        assert!(Arc::strong_count(&a) >= 2, "the table keeps a held key");
        assert!(Arc::ptr_eq(&a, &interned(key(1))));
        let weak = Arc::downgrade(&interned(key(3)));
        for i in 5000..12000 {
            interned(key(i));
        }
        assert!(weak.upgrade().is_none(), "a key no one holds is swept");
    }

    #[test]
    fn any_field_changes_the_group() {
        let base =
            json!({"event": "form_submit", "properties": {"form_name": "A", "page_url": "/p"}});
        let k = key("form_submit", &base);
        for changed in [
            json!({"event": "form_submit", "properties": {"form_name": "B", "page_url": "/p"}}),
            json!({"event": "form_submit", "properties": {"form_name": "A", "page_url": "/q"}}),
            json!({"event": "other", "properties": {"form_name": "A", "page_url": "/p"}}),
        ] {
            let event = changed["event"].as_str().unwrap();
            assert_ne!(key(event, &changed), k, "{changed}");
        }
        assert_ne!(
            group_key("website", "form_submit", Some("form_submit"), &base),
            k
        );
    }
}
