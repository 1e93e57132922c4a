//! The simulated environment's fixed ids and choices: SDK messages, and
//! Customer Insights – Journeys' consent table with its purposes, topics
//! and choice columns.

pub const MESSAGE_CREATE: &str = "9ebdbb1b-ea3e-db11-86a7-000a3a5473e8";
pub const MESSAGE_UPDATE: &str = "20bebb1b-ea3e-db11-86a7-000a3a5473e8";
pub const MESSAGE_DELETE: &str = "20bebb1b-ea3e-db11-86a7-000a3a5473e9";

/// Customer Insights – Journeys' consent table (`msdynmkt_contactpointconsent4`).
pub const CONSENT_ENTITY: &str = "msdynmkt_contactpointconsent4";
pub const CONSENT_SET: &str = "msdynmkt_contactpointconsent4s";
/// The purposes and topics of a new Journeys environment, as seeded here.
pub const PURPOSE_NEWSLETTER: &str = "b1a2c3d4-0000-4000-8000-0000000000a1";
pub const PURPOSE_MARKETING: &str = "b1a2c3d4-0000-4000-8000-0000000000a2";
pub const TOPIC_SPORTS: &str = "b1a2c3d4-0000-4000-8000-0000000000b1";
pub const TOPIC_NEWS: &str = "b1a2c3d4-0000-4000-8000-0000000000b2";
pub const RESTRICTIVE: i64 = 534_120_000;
pub const NON_RESTRICTIVE: i64 = 534_120_001;

/// The choice columns of the consent table and their valid values.
pub fn consent_choice_range(column: &str) -> Option<&'static [std::ops::RangeInclusive<i64>]> {
    Some(match column {
        "msdynmkt_contactpointtype" => &[534_120_000..=534_120_003],
        "msdynmkt_value" => &[534_120_000..=534_120_002],
        "msdynmkt_contactpointconsenttype" => &[534_120_000..=534_120_001],
        "msdynmkt_source" => &[534_120_000..=534_120_007],
        "msdynmkt_logicalreason" => &[534_119_999..=534_119_999, 534_120_000..=534_120_007],
        "statecode" => &[0..=1],
        "statuscode" => &[1..=2],
        _ => return None,
    })
}
