//! The JSON record inside a lock file.
//!
//! Reading is deliberately forgiving: records come from the original Python tool
//! (five fields), from this version, and from versions not written yet. A record we
//! misread as garbage would, after a short grace, be judged abandoned and broken
//! while its owner works, so any JSON object counts as a record, unknown fields are
//! ignored, and a field of an unexpected type reads as absent.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};

/// How far a transcode has come, as shown by `locks list`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// 0 to 100.
    #[serde(default, deserialize_with = "lenient")]
    pub percent: f64,
    /// Encoding speed, when ffmpeg has reported one.
    #[serde(default, deserialize_with = "lenient")]
    pub fps: Option<f64>,
    /// Estimated seconds to go, when known.
    #[serde(default, deserialize_with = "lenient")]
    pub eta_secs: Option<f64>,
}

/// The content of a lock file.
///
/// The first five fields are those of the original tool and are always written;
/// the rest are `None` in records written by it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LockRecord {
    /// Host name of the owner, for people.
    #[serde(default, deserialize_with = "lenient")]
    pub hostname: String,
    /// Process id of the owner on its host.
    #[serde(default, deserialize_with = "lenient")]
    pub pid: u32,
    /// When the record was last written, unix seconds: the file server's clock as the
    /// owner learned it when `timestamp_clock` says `server`, else (the original tool,
    /// older versions) the owner's own clock. The original tool judges staleness by it.
    #[serde(default, deserialize_with = "lenient")]
    pub timestamp: f64,
    /// File name (not path) of the media file claimed.
    #[serde(default, deserialize_with = "lenient")]
    pub file: String,
    /// When the claim was made, ISO 8601, owner's clock.
    #[serde(default, deserialize_with = "lenient")]
    pub locked_at: String,
    /// Random 128-bit hex nonce naming this claim; release and break check it.
    #[serde(default, deserialize_with = "lenient")]
    pub lock_id: Option<String>,
    /// Stable machine id of the owner's host.
    #[serde(default, deserialize_with = "lenient")]
    pub host_id: Option<String>,
    /// Start token of `pid` (see [`crate::identity::process_start_token`]).
    #[serde(default, deserialize_with = "lenient")]
    pub process_start: Option<String>,
    /// How often the owner promised to heartbeat.
    #[serde(default, deserialize_with = "lenient")]
    pub heartbeat_secs: Option<f64>,
    /// After how long without a heartbeat the owner considers its lock abandoned.
    #[serde(default, deserialize_with = "lenient")]
    pub stale_after_secs: Option<f64>,
    /// What the owner is doing: `claimed`, `transcoding`, `verifying`, `swapping`…
    #[serde(default, deserialize_with = "lenient")]
    pub phase: Option<String>,
    /// Transcode progress, while transcoding.
    #[serde(default, deserialize_with = "lenient")]
    pub progress: Option<Progress>,
    /// Version of the tool that wrote the record.
    #[serde(default, deserialize_with = "lenient")]
    pub tool_version: Option<String>,
    /// Which clock `timestamp` was read from: [`TIMESTAMP_FROM_SERVER`] in this version's
    /// records, absent in older ones.
    #[serde(default, deserialize_with = "lenient")]
    pub timestamp_clock: Option<String>,
}

/// The `timestamp_clock` of a record whose `timestamp` is the file server's clock.
pub const TIMESTAMP_FROM_SERVER: &str = "server";

impl LockRecord {
    /// Whether `timestamp` is the file server's clock, comparable with mtimes.
    pub fn timestamp_is_servers(&self) -> bool {
        self.timestamp_clock.as_deref() == Some(TIMESTAMP_FROM_SERVER)
    }
}

/// Why the bytes of a lock file are not a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordError {
    /// Zero bytes: created but not yet written, or the writer died first.
    Empty,
    /// Not JSON, or cut short: being written, or damaged.
    Malformed(String),
    /// JSON, but not an object.
    NotAnObject,
}

impl std::fmt::Display for RecordError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RecordError::Empty => f.write_str("empty"),
            RecordError::Malformed(why) => write!(f, "not a lock record: {why}"),
            RecordError::NotAnObject => f.write_str("not a lock record: JSON but not an object"),
        }
    }
}

impl std::error::Error for RecordError {}

impl LockRecord {
    /// Reads a record from the bytes of a lock file.
    pub fn parse(bytes: &[u8]) -> Result<LockRecord, RecordError> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(RecordError::Empty);
        }
        // serde_json rejects trailing bytes, which is what a reader sees when it
        // catches an in-place rewrite between the write and the truncate.
        let value: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|err| RecordError::Malformed(err.to_string()))?;
        if !value.is_object() {
            return Err(RecordError::NotAnObject);
        }
        LockRecord::deserialize(value).map_err(|err| RecordError::Malformed(err.to_string()))
    }

    /// The bytes to write into a lock file: one line of JSON.
    pub fn to_json(&self) -> serde_json::Result<Vec<u8>> {
        let mut bytes = serde_json::to_vec(self)?;
        bytes.push(b'\n');
        Ok(bytes)
    }
}

/// Deserializes `T`, or its default when the value has another type: a newer
/// version that changes a field's type must not make its whole lock unreadable.
fn lenient<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: DeserializeOwned + Default,
{
    let value = serde_json::Value::deserialize(deserializer)?;
    Ok(T::deserialize(value).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn original_tool_record_parses() {
        let legacy = br#"{"hostname": "nas-1", "pid": 4242, "timestamp": 1714000000.25,
            "file": "Movie1.mkv", "locked_at": "2024-04-25T01:06:40.250000"}"#;
        let record = LockRecord::parse(legacy).unwrap_or_default();
        assert_eq!(record.hostname, "nas-1");
        assert_eq!(record.pid, 4242);
        assert_eq!(record.timestamp, 1_714_000_000.25);
        assert_eq!(record.file, "Movie1.mkv");
        assert_eq!(record.lock_id, None);
        assert_eq!(record.host_id, None);
        assert_eq!(record.progress, None);
    }

    #[test]
    fn own_record_round_trips() {
        let record = LockRecord {
            hostname: "nas-1".into(),
            pid: 7,
            timestamp: 1.5,
            file: "a b.mkv".into(),
            locked_at: "2024-04-25T01:06:40Z".into(),
            lock_id: Some("0123456789abcdef0123456789abcdef".into()),
            host_id: Some("machine".into()),
            process_start: Some("linux:boot:1".into()),
            heartbeat_secs: Some(60.0),
            stale_after_secs: Some(1800.0),
            phase: Some("transcoding".into()),
            progress: Some(Progress {
                percent: 42.5,
                fps: Some(88.0),
                eta_secs: None,
            }),
            tool_version: Some("0.1.0".into()),
            timestamp_clock: Some(TIMESTAMP_FROM_SERVER.into()),
        };
        let bytes = record.to_json().unwrap_or_default();
        assert_eq!(bytes.last(), Some(&b'\n'));
        assert_eq!(LockRecord::parse(&bytes), Ok(record));
    }

    #[test]
    fn unknown_fields_and_wrong_types_are_tolerated() {
        let newer = br#"{"hostname": "nas-2", "pid": "not a number", "lock_id": 17,
            "progress": {"percent": "half", "fps": 30}, "phase": ["swap", 2],
            "shiny_new_field": {"x": 1}}"#;
        let record = LockRecord::parse(newer).unwrap_or_default();
        assert_eq!(record.hostname, "nas-2");
        assert_eq!(record.pid, 0);
        assert_eq!(record.lock_id, None);
        assert_eq!(record.phase, None);
        assert_eq!(
            record.progress,
            Some(Progress {
                percent: 0.0,
                fps: Some(30.0),
                eta_secs: None
            })
        );
    }

    #[test]
    fn any_object_is_a_record() {
        assert_eq!(LockRecord::parse(b"{}"), Ok(LockRecord::default()));
        let negative_pid = LockRecord::parse(br#"{"pid": -5}"#).unwrap_or_default();
        assert_eq!(negative_pid.pid, 0);
    }

    #[test]
    fn empty_partial_and_corrupt_records_are_errors() {
        assert_eq!(LockRecord::parse(b""), Err(RecordError::Empty));
        assert_eq!(LockRecord::parse(b" \n"), Err(RecordError::Empty));
        assert_eq!(LockRecord::parse(b"[1, 2]"), Err(RecordError::NotAnObject));
        assert_eq!(LockRecord::parse(b"null"), Err(RecordError::NotAnObject));
        for bad in [
            &br#"{"hostname": "nas-1", "pi"#[..],
            b"\0\0\0\0",
            b"\xff\xfe{",
            // An in-place rewrite caught before the truncate: new record, old tail.
            br#"{"pid": 1}"pid": 12345}"#,
        ] {
            assert!(
                matches!(LockRecord::parse(bad), Err(RecordError::Malformed(_))),
                "{bad:?}"
            );
        }
    }
}
