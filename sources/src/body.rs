//! Reading request bodies with a hard size limit, and bounded gzip decoding.
//!
//! A body is never buffered beyond its limit: the declared `Content-Length` is checked first,
//! and the stream is cut off as soon as the running total passes the limit (chunked bodies
//! declare no length).

use std::io::Read;
use std::pin::Pin;

use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};

use crate::error::IngestError;

/// A request body as a stream of chunks.
pub type BodyStream = Pin<Box<dyn Stream<Item = Result<Bytes, std::io::Error>> + Send>>;

/// What a failed body read answers: 408 when the client stalled, else 400.
pub fn read_error(e: std::io::Error) -> IngestError {
    if e.kind() == std::io::ErrorKind::TimedOut {
        IngestError::RequestTimeout(format!("reading body: {e}"))
    } else {
        IngestError::BadRequest(format!("reading body: {e}"))
    }
}

/// Reads the whole body if it is at most `limit` bytes, else fails with 413.
pub async fn read_limited(
    mut body: BodyStream,
    content_length: Option<u64>,
    limit: usize,
) -> Result<Bytes, IngestError> {
    if content_length.is_some_and(|n| n > limit as u64) {
        return Err(IngestError::TooLarge(limit));
    }
    let mut buf =
        BytesMut::with_capacity(content_length.unwrap_or(1024).min(limit as u64) as usize);
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(read_error)?;
        if buf.len() + chunk.len() > limit {
            return Err(IngestError::TooLarge(limit));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

/// Refuses a `Content-Encoding` that [`decode`] cannot undo (415), before anything is read.
pub fn check_encoding(encoding: Option<&str>) -> Result<(), IngestError> {
    match encoding.map(|e| e.trim().to_ascii_lowercase()) {
        None => Ok(()),
        Some(e) if e.is_empty() || e == "identity" || e == "gzip" || e == "x-gzip" => Ok(()),
        Some(other) => Err(IngestError::UnsupportedEncoding(other)),
    }
}

/// Decodes a body according to `Content-Encoding`, bounding the decoded size too (a small
/// gzip body can expand enormously).
pub fn decode(encoding: Option<&str>, body: Bytes, limit: usize) -> Result<Bytes, IngestError> {
    match encoding.map(|e| e.trim().to_ascii_lowercase()) {
        None => Ok(body),
        Some(e) if e.is_empty() || e == "identity" => Ok(body),
        Some(e) if e == "gzip" || e == "x-gzip" => {
            let mut out = Vec::with_capacity(body.len() * 4);
            flate2::read::GzDecoder::new(&body[..])
                .take(limit as u64 + 1)
                .read_to_end(&mut out)
                .map_err(|e| IngestError::BadRequest(format!("gzip body: {e}")))?;
            if out.len() > limit {
                return Err(IngestError::TooLarge(limit));
            }
            Ok(Bytes::from(out))
        }
        Some(other) => Err(IngestError::UnsupportedEncoding(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::stream;
    use std::io::Write;

    fn stream_of(chunks: Vec<&'static [u8]>) -> BodyStream {
        Box::pin(stream::iter(
            chunks.into_iter().map(|c| Ok(Bytes::from_static(c))),
        ))
    }

    #[tokio::test]
    async fn limit_applies_to_declared_and_streamed_length() {
        assert!(matches!(
            read_limited(stream_of(vec![b"ab"]), Some(10), 5).await,
            Err(IngestError::TooLarge(5))
        ));
        assert!(matches!(
            read_limited(stream_of(vec![b"abc", b"def"]), None, 5).await,
            Err(IngestError::TooLarge(5))
        ));
        let ok = read_limited(stream_of(vec![b"abc", b"de"]), None, 5)
            .await
            .unwrap();
        assert_eq!(&ok[..], b"abcde");
    }

    #[test]
    fn gzip_is_bounded() {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(&vec![b'a'; 10_000]).unwrap();
        let gz = Bytes::from(enc.finish().unwrap());
        assert_eq!(
            decode(Some("gzip"), gz.clone(), 10_000).unwrap().len(),
            10_000
        );
        assert!(matches!(
            decode(Some("gzip"), gz, 9_999),
            Err(IngestError::TooLarge(_))
        ));
        assert!(matches!(
            decode(Some("br"), Bytes::new(), 1),
            Err(IngestError::UnsupportedEncoding(_))
        ));
    }
}
