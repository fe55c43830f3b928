//! Records come back byte for byte, in LSN order, across segment rotation and reopen, with
//! direct I/O and with the buffered fallback; real `MessageFrame` bytes stay readable.
mod common;

use common::*;
use ringbearer_core::message::{access_frame, FrameBytes, MessageFrame};
use ringbearer_persist::{DmaStorage, Lsn, Record, Wal};

fn round_trip_with(storage: impl Fn() -> DmaStorage, expect_direct: Option<bool>) {
    let dir = TempDir::new("round-trip");
    run(async {
        let cfg = config(dir.path(), 16 << 10);
        let (wal, rec) = Wal::open_with(cfg.clone(), storage()).await.unwrap();
        assert!(rec.records.is_empty());
        assert_eq!(rec.report.next_lsn, Lsn(1));
        let mut last = Lsn(0);
        for id in 1..=300 {
            let lsn = append(&wal, id % 5, id).unwrap();
            assert!(lsn > last, "LSNs strictly increase");
            last = lsn;
            if id % 50 == 0 {
                wal.durable(lsn).await.unwrap();
            }
        }
        wal.durable(last).await.unwrap();
        assert_eq!(wal.durable_lsn(), last);
        let stats = wal.stats();
        assert!(stats.segments > 3, "rotated: {stats:?}");
        assert_eq!(stats.appended, 300);
        if let Some(d) = expect_direct {
            assert_eq!(stats.direct_io, d);
        }
        wal.close().await.unwrap();

        // Reopen: everything back, in order; appends continue after the last LSN.
        let (wal, rec) = Wal::open_with(cfg.clone(), storage()).await.unwrap();
        assert_eq!(rec.records.len(), 300);
        assert_eq!(rec.report.tail_cut, None);
        assert_eq!(rec.report.segments_scanned, segments(dir.path()).len());
        assert_eq!(rec.records[0].lsn, Lsn(1));
        check_all(&rec.records);
        let ids: Vec<u64> = rec.records.iter().map(|r| r.id).collect();
        assert_eq!(ids, (1..=300).collect::<Vec<_>>());
        let lsn = append(&wal, 1, 301).unwrap();
        assert_eq!(lsn, Lsn(301));
        wal.durable(lsn).await.unwrap();
        wal.close().await.unwrap();

        let (wal, rec) = Wal::open_with(cfg, storage()).await.unwrap();
        assert_eq!(rec.records.len(), 301);
        check_all(&rec.records);
        wal.close().await.unwrap();
    });
}

#[test]
fn round_trip_across_rotation_and_reopen_direct_io() {
    // /tmp is ext4 on these machines: O_DIRECT is honoured.
    round_trip_with(DmaStorage::new, None);
}

#[test]
fn round_trip_with_the_buffered_fallback() {
    round_trip_with(DmaStorage::buffered, Some(false));
}

#[test]
fn message_frames_survive_and_read_in_place() {
    let dir = TempDir::new("frames");
    run(async {
        let frame = MessageFrame {
            id: 7,
            ts_ms: 1_700_000_000_000,
            channel: "wedding:main:w-1".into(),
            msg_type: "timeline".into(),
            event: Some("timeline:cake".into()),
            priority: 2,
            payload: r#"{"at":"21:30"}"#.into(),
            sender_user_id: "u-1".into(),
            sender_org: "org-1".into(),
            sender_role: 1,
            target_user_id: None,
            target_org: None,
            target_roles: 0,
            wedding_context: None,
            idempotency_key: Some("k-1".into()),
        };
        let bytes = frame.encode();
        let cfg = config(dir.path(), 1 << 20);
        let (wal, _) = Wal::open(cfg.clone()).await.unwrap();
        let lsn = wal
            .append(&Record {
                channel: &frame.channel,
                id: frame.id,
                ts_ms: frame.ts_ms,
                body: &bytes,
            })
            .unwrap();
        wal.durable(lsn).await.unwrap();
        wal.close().await.unwrap();

        let (wal, rec) = Wal::open(cfg).await.unwrap();
        assert_eq!(rec.records.len(), 1);
        let mut aligned = FrameBytes::new();
        aligned.extend_from_slice(&rec.records[0].body);
        let f = access_frame(&aligned).unwrap();
        assert_eq!(f.id(), 7);
        assert_eq!(f.payload.as_str(), r#"{"at":"21:30"}"#);
        wal.close().await.unwrap();
    });
}

#[test]
fn limits_are_refused_as_bad_input() {
    let dir = TempDir::new("limits");
    run(async {
        let (wal, _) = Wal::open(config(dir.path(), 1 << 20)).await.unwrap();
        let long = "x".repeat(ringbearer_persist::format::CHANNEL_MAX_BYTES + 1);
        let e = wal
            .append(&Record {
                channel: &long,
                id: 1,
                ts_ms: 0,
                body: b"",
            })
            .unwrap_err();
        assert!(
            matches!(e, ringbearer_persist::WalError::InvalidRecord(_)),
            "{e}"
        );
        let big = vec![0u8; ringbearer_persist::format::BODY_MAX_BYTES + 1];
        let e = wal
            .append(&Record {
                channel: "a:b:c",
                id: 1,
                ts_ms: 0,
                body: &big,
            })
            .unwrap_err();
        assert!(
            matches!(e, ringbearer_persist::WalError::InvalidRecord(_)),
            "{e}"
        );
        // A refused record takes no LSN.
        assert_eq!(append(&wal, 0, 1).unwrap(), Lsn(1));
        // An LSN never handed out is refused, not waited for.
        let e = wal.durable(Lsn(5)).await.unwrap_err();
        assert!(
            matches!(
                e,
                ringbearer_persist::WalError::UnknownLsn { lsn: 5, next: 2 }
            ),
            "{e}"
        );
        // A largest record goes through on its own.
        let max = vec![1u8; ringbearer_persist::format::BODY_MAX_BYTES];
        let lsn = wal
            .append(&Record {
                channel: "a:b:c",
                id: 2,
                ts_ms: 0,
                body: &max,
            })
            .unwrap();
        wal.durable(lsn).await.unwrap();
        wal.close().await.unwrap();
        let (wal, rec) = Wal::open(config(dir.path(), 1 << 20)).await.unwrap();
        assert_eq!(rec.records[1].body.len(), max.len());
        wal.close().await.unwrap();
    });
}
