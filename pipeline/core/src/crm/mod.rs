//! CRM integrations' shared definitions: which CRM an integration talks to, its public state
//! (the API's view), its field mapping, the config events that change it, and the pulled
//! records that enter the log.
//!
//! Credentials never appear here in the clear: an integration carries them sealed
//! ([`seal`]), and only the sync service opens them, in memory, to call the CRM.

pub mod destination;
pub mod mapping;
pub mod records;
pub mod seal;
pub mod state;

use serde::{Deserialize, Serialize};

pub use destination::{
    DeliveryEvent, DeliveryStatus, Destination, DestinationEvent, DestinationFields,
    DestinationState, RecordResult,
};
pub use mapping::{FieldMapping, FieldRef, StdField};
pub use records::{CrmBatch, CrmRecord};
pub use state::{Cursor, Integration, IntegrationEvent, IntegrationState};

/// The CRMs trailspark reads from (and, through destinations, writes to).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IntegrationKind {
    Salesforce,
    Hubspot,
    Airtable,
}

impl IntegrationKind {
    pub fn parse(s: &str) -> Option<IntegrationKind> {
        match s {
            "salesforce" => Some(IntegrationKind::Salesforce),
            "hubspot" => Some(IntegrationKind::Hubspot),
            "airtable" => Some(IntegrationKind::Airtable),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            IntegrationKind::Salesforce => "salesforce",
            IntegrationKind::Hubspot => "hubspot",
            IntegrationKind::Airtable => "airtable",
        }
    }

    /// The objects a sync pulls, in the order it pulls them (accounts first, so a contact's
    /// account is known when the contact lands).
    pub fn objects(self) -> &'static [CrmObject] {
        match self {
            IntegrationKind::Salesforce => {
                &[CrmObject::Account, CrmObject::Contact, CrmObject::Lead]
            }
            IntegrationKind::Hubspot | IntegrationKind::Airtable => {
                &[CrmObject::Account, CrmObject::Contact]
            }
        }
    }

    /// The real service's API host, used when an integration names none.
    pub fn default_api_base(self) -> &'static str {
        match self {
            // Salesforce answers the instance to call in its token response; this is the
            // login host.
            IntegrationKind::Salesforce => "https://login.salesforce.com",
            IntegrationKind::Hubspot => "https://api.hubapi.com",
            IntegrationKind::Airtable => "https://api.airtable.com",
        }
    }
}

/// A CRM object as trailspark reads it. HubSpot's and Airtable's companies are accounts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CrmObject {
    Account,
    Contact,
    /// Salesforce's unconverted people.
    Lead,
}

impl CrmObject {
    pub fn as_str(self) -> &'static str {
        match self {
            CrmObject::Account => "account",
            CrmObject::Contact => "contact",
            CrmObject::Lead => "lead",
        }
    }

    /// The object's name in `kind`'s own API (Salesforce sObject, HubSpot object type,
    /// Airtable table role).
    pub fn native(self, kind: IntegrationKind) -> &'static str {
        match (kind, self) {
            (IntegrationKind::Salesforce, CrmObject::Account) => "Account",
            (IntegrationKind::Salesforce, CrmObject::Contact) => "Contact",
            (IntegrationKind::Salesforce, CrmObject::Lead) => "Lead",
            (IntegrationKind::Hubspot, CrmObject::Account) => "companies",
            (IntegrationKind::Hubspot, _) => "contacts",
            (IntegrationKind::Airtable, CrmObject::Account) => "companies",
            (IntegrationKind::Airtable, _) => "contacts",
        }
    }

    /// Reads an object named the way a mapping names it: Salesforce's sObject names,
    /// HubSpot's `company`/`contact` (singular or plural), Airtable's table roles.
    pub fn parse(kind: IntegrationKind, s: &str) -> Option<CrmObject> {
        let l = s.to_ascii_lowercase();
        let o = match l.as_str() {
            "account" | "accounts" | "company" | "companies" => CrmObject::Account,
            "contact" | "contacts" => CrmObject::Contact,
            "lead" | "leads" => CrmObject::Lead,
            _ => return None,
        };
        kind.objects().contains(&o).then_some(o)
    }
}

/// Whether an integration can be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Connected,
    Disconnected,
}
