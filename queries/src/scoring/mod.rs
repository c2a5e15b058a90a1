//! Lead scoring's views: accounts, a lead's CRM records, the context an evaluation sees, and the JSON of settings,
//! evaluation rules, models and evaluations.

pub mod accounts;
pub mod contact;
pub mod context;
pub mod context_view;
pub mod crm;
pub mod views;
