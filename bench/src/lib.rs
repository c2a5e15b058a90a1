//! Shared pieces of trailspark's benchmarks: sample payloads, the process harness of the
//! load benchmarks ([`harness`]), signalmark's workload generator ([`workload`]) and its live
//! load over HTTP and NATS ([`load`]), and the server's histograms between two scrapes
//! ([`scrape`]).

pub mod harness;
pub mod load;
pub mod scrape;
pub mod workload;

/// Representative payloads: a generic webhook form fill, a Segment identify, a Segment track
/// with a rich context (what SDKs send), and a Marketo webhook.
pub fn sample_payloads() -> Vec<(&'static str, String)> {
    vec![
        (
            "generic_form",
            r#"{"email":"Prospect@Company.com","event":"form_submission","timestamp":"2024-01-15T11:15:00Z","properties":{"form_name":"Request Demo","form_id":"demo-form-main","page_url":"https://yoursite.com/demo","company":"TechCorp","company_size":"100-500","job_title":"Marketing Director"}}"#.to_string(),
        ),
        (
            "segment_identify",
            r#"{"type":"identify","anonymousId":"a-7f3c","userId":"u-19","traits":{"email":"x@y.com","name":"Ana Diaz","plan":"pro"},"messageId":"msg-1","timestamp":"2024-01-15T14:30:00Z","sentAt":"2024-01-15T14:30:01Z"}"#.to_string(),
        ),
        (
            "segment_track_rich",
            r#"{"type":"track","event":"Pricing Page Viewed","anonymousId":"a-7f3c","properties":{"plan":"pro","price":49,"currency":"USD","items":[{"sku":"a","qty":1},{"sku":"b","qty":2}]},"context":{"ip":"1.2.3.4","library":{"name":"analytics.js","version":"4.1.0"},"page":{"path":"/pricing","referrer":"https://google.com","title":"Pricing","url":"https://example.com/pricing"},"userAgent":"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36","locale":"en-US","campaign":{"name":"spring","source":"google","medium":"cpc"}},"messageId":"ajs-next-1705329000-abc","timestamp":"2024-01-15T14:30:00Z"}"#.to_string(),
        ),
        (
            "marketo",
            r#"{"mktLeadId":12345,"email":"lead@acme.io","event":"Email Clicked","campaign":"Q1 Nurture","link":"https://acme.io/whitepaper"}"#.to_string(),
        ),
    ]
}
