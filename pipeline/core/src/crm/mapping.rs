//! Field mapping: which CRM field feeds each of trailspark's standard fields, per
//! integration, with the product's defaults pre-filled.
//!
//! A field is named `Object.Field`: Salesforce's sObject and field API names
//! (`Account.Industry`), HubSpot's `company.industry` / `contact.email`, Airtable's table
//! role and field name (`companies.Industry`). Salesforce maps each standard field twice:
//! the primary on Account or Contact, the fallback on Lead for people not yet converted.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{CrmObject, IntegrationKind};

/// trailspark's standard fields (the Standard Fields tab).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StdField {
    AccountName,
    WebsiteDomain,
    Industry,
    MarketSegment,
    EmployeeCount,
    Region,
    Email,
    FirstName,
    LastName,
    Company,
    JobTitle,
}

impl StdField {
    pub const ALL: [StdField; 11] = [
        StdField::AccountName,
        StdField::WebsiteDomain,
        StdField::Industry,
        StdField::MarketSegment,
        StdField::EmployeeCount,
        StdField::Region,
        StdField::Email,
        StdField::FirstName,
        StdField::LastName,
        StdField::Company,
        StdField::JobTitle,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            StdField::AccountName => "account_name",
            StdField::WebsiteDomain => "website_domain",
            StdField::Industry => "industry",
            StdField::MarketSegment => "market_segment",
            StdField::EmployeeCount => "employee_count",
            StdField::Region => "region",
            StdField::Email => "email",
            StdField::FirstName => "first_name",
            StdField::LastName => "last_name",
            StdField::Company => "company",
            StdField::JobTitle => "job_title",
        }
    }

    /// Whether the field describes the account (else the person).
    pub fn of_account(self) -> bool {
        matches!(
            self,
            StdField::AccountName
                | StdField::WebsiteDomain
                | StdField::Industry
                | StdField::MarketSegment
                | StdField::EmployeeCount
                | StdField::Region
        )
    }

    /// The kind of value the CRM field must hold (checked against the CRM's describe).
    pub fn numeric(self) -> bool {
        self == StdField::EmployeeCount
    }
}

/// One CRM field: the object it is on and its API name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(into = "String")]
pub struct FieldRef {
    pub object: CrmObject,
    pub field: String,
}

impl From<FieldRef> for String {
    fn from(f: FieldRef) -> String {
        format!("{}.{}", f.object.as_str(), f.field)
    }
}

impl FieldRef {
    /// Reads `Object.Field` for `kind`.
    pub fn parse(kind: IntegrationKind, s: &str) -> Result<FieldRef, String> {
        let (obj, field) = s
            .split_once('.')
            .ok_or_else(|| format!("`{s}` is not `Object.Field`"))?;
        let object = CrmObject::parse(kind, obj)
            .ok_or_else(|| format!("`{obj}` is not an object {} syncs", kind.as_str()))?;
        let field = field.trim();
        if field.is_empty() || field.len() > 255 {
            return Err(format!("`{s}` names no field"));
        }
        Ok(FieldRef {
            object,
            field: field.to_string(),
        })
    }
}

impl<'de> Deserialize<'de> for FieldRef {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Stored refs are written as `object.Field` with the object's trailspark name.
        let s = String::deserialize(d)?;
        let (obj, field) = s
            .split_once('.')
            .ok_or_else(|| serde::de::Error::custom("a field is `object.Field`"))?;
        let object = match obj {
            "account" => CrmObject::Account,
            "contact" => CrmObject::Contact,
            "lead" => CrmObject::Lead,
            _ => return Err(serde::de::Error::custom("unknown object")),
        };
        Ok(FieldRef {
            object,
            field: field.to_string(),
        })
    }
}

/// A standard field's source: a primary CRM field and, for Salesforce, a fallback on Lead.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldMap {
    pub primary: FieldRef,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<FieldRef>,
}

/// An integration's mapping: standard fields and the custom fields pulled per object.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldMapping {
    pub fields: BTreeMap<StdField, FieldMap>,
    /// Further CRM fields pulled per object and passed through under `custom`.
    #[serde(default)]
    pub custom: BTreeMap<CrmObject, Vec<String>>,
}

fn pair(kind: IntegrationKind, primary: &str, fallback: Option<&str>) -> FieldMap {
    FieldMap {
        primary: FieldRef::parse(kind, primary).expect("default mappings are valid"),
        fallback: fallback.map(|f| FieldRef::parse(kind, f).expect("default mappings are valid")),
    }
}

impl FieldMapping {
    /// The product's default mapping for `kind` (Airtable's field names are ours: the
    /// product leaves them to the user).
    pub fn defaults(kind: IntegrationKind) -> FieldMapping {
        use StdField::*;
        let rows: &[(StdField, &str, Option<&str>)] = match kind {
            IntegrationKind::Salesforce => &[
                (AccountName, "Account.Name", Some("Lead.Company")),
                (WebsiteDomain, "Account.Website", Some("Lead.Website")),
                (Industry, "Account.Industry", Some("Lead.Industry")),
                (
                    EmployeeCount,
                    "Account.NumberOfEmployees",
                    Some("Lead.NumberOfEmployees"),
                ),
                (Region, "Account.BillingCountry", Some("Lead.Country")),
                (Email, "Contact.Email", Some("Lead.Email")),
                (FirstName, "Contact.FirstName", Some("Lead.FirstName")),
                (LastName, "Contact.LastName", Some("Lead.LastName")),
                (Company, "Account.Name", Some("Lead.Company")),
                (JobTitle, "Contact.Title", Some("Lead.Title")),
            ],
            IntegrationKind::Hubspot => &[
                (AccountName, "company.name", None),
                (WebsiteDomain, "company.domain", None),
                (Industry, "company.industry", None),
                (EmployeeCount, "company.numberofemployees", None),
                (Region, "company.country", None),
                (Email, "contact.email", None),
                (FirstName, "contact.firstname", None),
                (LastName, "contact.lastname", None),
                (Company, "contact.company", None),
                (JobTitle, "contact.jobtitle", None),
            ],
            IntegrationKind::Airtable => &[
                (AccountName, "companies.Name", None),
                (WebsiteDomain, "companies.Website", None),
                (Industry, "companies.Industry", None),
                (MarketSegment, "companies.Segment", None),
                (EmployeeCount, "companies.Employees", None),
                (Region, "companies.Region", None),
                (Email, "contacts.Email", None),
                (FirstName, "contacts.First Name", None),
                (LastName, "contacts.Last Name", None),
                (Company, "contacts.Company", None),
                (JobTitle, "contacts.Title", None),
            ],
        };
        FieldMapping {
            fields: rows
                .iter()
                .map(|(f, p, fb)| (*f, pair(kind, p, *fb)))
                .collect(),
            custom: BTreeMap::new(),
        }
    }

    /// The CRM fields a pull of `object` asks for, sorted and distinct.
    pub fn fields_of(&self, object: CrmObject) -> Vec<String> {
        let mut v: Vec<String> = self
            .fields
            .values()
            .flat_map(|m| std::iter::once(&m.primary).chain(m.fallback.as_ref()))
            .filter(|r| r.object == object)
            .map(|r| r.field.clone())
            .chain(self.custom.get(&object).into_iter().flatten().cloned())
            .collect();
        v.sort();
        v.dedup();
        v
    }

    /// Every CRM field the mapping names, as `(object, field)`, for a check against the
    /// CRM's describe; with the standard field it feeds, if any.
    pub fn all_refs(&self) -> Vec<(FieldRef, Option<StdField>)> {
        let mut v: Vec<(FieldRef, Option<StdField>)> = Vec::new();
        for (f, m) in &self.fields {
            v.push((m.primary.clone(), Some(*f)));
            if let Some(fb) = &m.fallback {
                v.push((fb.clone(), Some(*f)));
            }
        }
        for (o, fields) in &self.custom {
            for f in fields {
                v.push((
                    FieldRef {
                        object: *o,
                        field: f.clone(),
                    },
                    None,
                ));
            }
        }
        v
    }

    /// The standard fields a record of `object` carries under this mapping: its primary
    /// fields, and its fallback fields where the primary is on another object.
    pub fn std_fields_of(&self, object: CrmObject) -> Vec<(StdField, &str)> {
        self.fields
            .iter()
            .filter_map(|(f, m)| {
                if m.primary.object == object {
                    Some((*f, m.primary.field.as_str()))
                } else {
                    m.fallback
                        .as_ref()
                        .filter(|fb| fb.object == object)
                        .map(|fb| (*f, fb.field.as_str()))
                }
            })
            .collect()
    }

    /// Applies a change given as JSON over this mapping:
    /// `{"fields": {"industry": "company.industry" | {"primary", "fallback"} | null},
    ///   "custom": {"account": ["AnnualRevenue"]}}`. Unknown standard fields, objects the CRM
    /// does not sync, and malformed names are refused by name.
    pub fn change(
        mut self,
        kind: IntegrationKind,
        change: &serde_json::Value,
    ) -> Result<FieldMapping, String> {
        let obj = change
            .as_object()
            .ok_or("`mapping` is a JSON object with `fields` and `custom`")?;
        for k in obj.keys() {
            if k != "fields" && k != "custom" {
                return Err(format!("`mapping` has no field `{k}`"));
            }
        }
        if let Some(fields) = obj.get("fields") {
            let fields = fields.as_object().ok_or("`mapping.fields` is an object")?;
            for (name, v) in fields {
                let std = StdField::ALL
                    .into_iter()
                    .find(|f| f.as_str() == name)
                    .ok_or_else(|| format!("`{name}` is not a standard field"))?;
                let one = |v: &serde_json::Value| -> Result<FieldRef, String> {
                    let s = v
                        .as_str()
                        .ok_or_else(|| format!("`mapping.fields.{name}` names a field as text"))?;
                    FieldRef::parse(kind, s)
                };
                match v {
                    serde_json::Value::Null => {
                        self.fields.remove(&std);
                    }
                    serde_json::Value::String(_) => {
                        self.fields.insert(
                            std,
                            FieldMap {
                                primary: one(v)?,
                                fallback: None,
                            },
                        );
                    }
                    serde_json::Value::Object(o) => {
                        let primary = one(o.get("primary").unwrap_or(&serde_json::Value::Null))?;
                        let fallback = match o.get("fallback") {
                            None | Some(serde_json::Value::Null) => None,
                            Some(f) => Some(one(f)?),
                        };
                        self.fields.insert(std, FieldMap { primary, fallback });
                    }
                    _ => return Err(format!("`mapping.fields.{name}` is a field name or null")),
                }
            }
        }
        if let Some(custom) = obj.get("custom") {
            let custom = custom.as_object().ok_or("`mapping.custom` is an object")?;
            for (o, v) in custom {
                let object = CrmObject::parse(kind, o)
                    .ok_or_else(|| format!("`{o}` is not an object {} syncs", kind.as_str()))?;
                let list = v
                    .as_array()
                    .ok_or_else(|| format!("`mapping.custom.{o}` is a list of field names"))?;
                let mut names = Vec::new();
                for f in list {
                    match f.as_str().map(str::trim) {
                        Some(n) if !n.is_empty() && n.len() <= 255 => names.push(n.to_string()),
                        _ => return Err(format!("`mapping.custom.{o}` holds field names")),
                    }
                }
                self.custom.insert(object, names);
            }
        }
        if !self.fields.contains_key(&StdField::Email) {
            return Err("`email` must stay mapped: leads are matched by it".into());
        }
        Ok(self)
    }

    /// The mapping as the API shows it.
    pub fn to_json(&self, kind: IntegrationKind) -> serde_json::Value {
        let show = |r: &FieldRef| format!("{}.{}", r.object.native(kind), r.field);
        let fields: serde_json::Map<String, serde_json::Value> = self
            .fields
            .iter()
            .map(|(f, m)| {
                (
                    f.as_str().to_string(),
                    serde_json::json!({
                        "primary": show(&m.primary),
                        "fallback": m.fallback.as_ref().map(show),
                    }),
                )
            })
            .collect();
        let custom: serde_json::Map<String, serde_json::Value> = self
            .custom
            .iter()
            .map(|(o, v)| (o.native(kind).to_string(), serde_json::json!(v)))
            .collect();
        serde_json::json!({"fields": fields, "custom": custom})
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_and_changes() {
        let sf = FieldMapping::defaults(IntegrationKind::Salesforce);
        assert_eq!(
            sf.fields_of(CrmObject::Lead),
            [
                "Company",
                "Country",
                "Email",
                "FirstName",
                "Industry",
                "LastName",
                "NumberOfEmployees",
                "Title",
                "Website"
            ]
        );
        let lead_std = sf.std_fields_of(CrmObject::Lead);
        assert!(lead_std.contains(&(StdField::Email, "Email")));
        let hs = FieldMapping::defaults(IntegrationKind::Hubspot)
            .change(
                IntegrationKind::Hubspot,
                &json!({"fields": {"market_segment": "company.segment__c", "region": null},
                        "custom": {"company": ["annualrevenue"]}}),
            )
            .unwrap();
        assert_eq!(
            hs.fields[&StdField::MarketSegment].primary.field,
            "segment__c"
        );
        assert!(!hs.fields.contains_key(&StdField::Region));
        assert!(hs
            .fields_of(CrmObject::Account)
            .contains(&"annualrevenue".to_string()));
        let err = FieldMapping::defaults(IntegrationKind::Hubspot)
            .change(
                IntegrationKind::Hubspot,
                &json!({"fields": {"email": "lead.Email"}}),
            )
            .unwrap_err();
        assert!(err.contains("lead"), "{err}");
        let err = FieldMapping::defaults(IntegrationKind::Hubspot)
            .change(
                IntegrationKind::Hubspot,
                &json!({"fields": {"score": "contact.x"}}),
            )
            .unwrap_err();
        assert!(err.contains("score"), "{err}");
        let stored = serde_json::to_string(&hs).unwrap();
        assert_eq!(serde_json::from_str::<FieldMapping>(&stored).unwrap(), hs);
    }
}
