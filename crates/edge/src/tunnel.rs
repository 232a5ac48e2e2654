//! Upgraded connections (WebSocket and other `Upgrade` protocols) between a client and an
//! app instance: bytes are relayed both ways until either side closes, or until the
//! instance goes away (a drain's deadline). Then a WebSocket client gets a close frame,
//! 1001 "going away", so it reconnects (to the new deployment) instead of seeing its TCP
//! connection cut; other upgraded connections are closed. To put a frame into the
//! app→client stream the edge must be between two of the app's frames, so that direction
//! is followed frame header by frame header ([`FrameTracker`]).

use std::io;
use std::time::Duration;

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::debug;

use crate::upstreams::{InFlightGuard, UpgradedGuard};

/// How long the app may take to finish the frame it is sending once its instance goes away.
const FINISH_FRAME: Duration = Duration::from_secs(2);
/// How long a client told to go away gets to answer (its own close frame) and hang up.
const CLOSE_REPLY: Duration = Duration::from_secs(2);
/// Relay buffer per direction.
const BUFFER: usize = 16 * 1024;

/// A server's close frame (unmasked, FIN): status 1001, reason "going away".
const GOING_AWAY: [u8; 14] = [
    0x88, 12, 0x03, 0xE9, b'g', b'o', b'i', b'n', b'g', b' ', b'a', b'w', b'a', b'y',
];

/// How the app→client direction ended.
enum Ended {
    /// The app closed its side (or its instance stopped).
    AppClosed,
    /// The instance is going away: the client was told (or, mid-frame, cut off).
    GoingAway,
}

/// Relays an upgraded connection until either side closes or the instance goes away.
/// `websocket`: the app agreed to `Upgrade: websocket`, so its frames are followed.
/// `in_flight` counts the connection towards its instance until the app side is closed.
pub(crate) async fn run(client: OnUpgrade, upstream: OnUpgrade, websocket: bool, in_flight: InFlightGuard) {
    let in_flight: UpgradedGuard = in_flight.into_upgraded();
    // Subscribed before the handshake completes, so a drain's signal is never missed.
    let mut going_away = in_flight.upstream().going_away();
    let (client, upstream) = match tokio::try_join!(client, upstream) {
        Ok(pair) => pair,
        Err(e) => {
            debug!(error = %e, "upgrade handshake did not complete");
            return;
        }
    };
    let (mut client_read, mut client_write) = tokio::io::split(TokioIo::new(client));
    let (mut app_read, mut app_write) = tokio::io::split(TokioIo::new(upstream));
    let frames = websocket.then(FrameTracker::default);
    let ended = {
        let mut to_app = Box::pin(async {
            let copied = tokio::io::copy(&mut client_read, &mut app_write).await;
            let _ = app_write.shutdown().await;
            copied
        });
        let mut to_client = Box::pin(relay_to_client(
            &mut app_read,
            &mut client_write,
            frames,
            &mut going_away,
        ));
        let mut to_app_done = false;
        let ended = loop {
            tokio::select! {
                copied = &mut to_app, if !to_app_done => {
                    to_app_done = true;
                    debug!(to_app = ?copied.ok(), "client closed its side of an upgraded connection");
                }
                ended = &mut to_client => break ended,
            }
        };
        drop(to_client);
        match ended {
            // The app hung up on its own: the client's side may still be sending (a
            // half-close), as a plain byte relay would allow, until it is done or the
            // instance goes away.
            Ok(Ended::AppClosed) if !to_app_done && !websocket => {
                tokio::select! {
                    _ = &mut to_app => {}
                    _ = going_away.changed() => {}
                }
            }
            _ => {}
        }
        ended
    };
    // The app's side is closed now; the instance no longer waits for this connection.
    drop((app_read, app_write));
    drop(in_flight);
    match ended {
        Ok(Ended::GoingAway) | Ok(Ended::AppClosed) if websocket => {
            // The client answers a close frame with its own and hangs up; what it sends
            // until then has nowhere to go.
            let mut sink = [0u8; 1024];
            let _ = tokio::time::timeout(CLOSE_REPLY, async {
                while matches!(client_read.read(&mut sink).await, Ok(n) if n > 0) {}
            })
            .await;
            debug!("upgraded connection closed");
        }
        Ok(_) => debug!("upgraded connection closed"),
        Err(e) => debug!(error = %e, "upgraded connection ended with an error"),
    }
}

/// Copies the app's bytes to the client until the app closes or the instance goes away;
/// for a WebSocket (`frames` given) the client is then sent a close frame at the next
/// frame boundary, unless the app already sent one.
async fn relay_to_client<R, W>(
    app: &mut R,
    client: &mut W,
    mut frames: Option<FrameTracker>,
    going_away: &mut watch::Receiver<u64>,
) -> io::Result<Ended>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; BUFFER];
    // Set once the instance goes away: the app's current frame must be through by then.
    let mut finish_by: Option<Instant> = None;
    loop {
        if finish_by.is_some() && frames.as_ref().is_none_or(FrameTracker::at_boundary) {
            say_going_away(client, frames.as_ref()).await;
            return Ok(Ended::GoingAway);
        }
        // While going away, read no further than the end of the current frame, so the
        // close frame follows it and nothing of the next one is sent.
        let limit = match (&finish_by, &frames) {
            (Some(_), Some(frames)) => frames.bytes_to_boundary().min(buf.len()),
            _ => buf.len(),
        };
        let read = tokio::select! {
            _ = going_away.changed(), if finish_by.is_none() => {
                finish_by = Some(Instant::now() + FINISH_FRAME);
                continue;
            }
            () = tokio::time::sleep_until(finish_by.unwrap_or_else(Instant::now)), if finish_by.is_some() => {
                debug!("the app did not finish its frame before its instance went away; closing");
                let _ = client.shutdown().await;
                return Ok(Ended::GoingAway);
            }
            read = app.read(&mut buf[..limit]) => read?,
        };
        if read == 0 {
            // The instance stopped (or the app hung up) between frames: a WebSocket
            // client is told, as for a drain, so it reconnects.
            match &frames {
                Some(tracker) if tracker.at_boundary() => say_going_away(client, frames.as_ref()).await,
                _ => {
                    let _ = client.shutdown().await;
                }
            }
            return Ok(Ended::AppClosed);
        }
        if let Some(frames) = &mut frames {
            frames.feed(&buf[..read]);
        }
        client.write_all(&buf[..read]).await?;
    }
}

/// Sends a WebSocket client the going-away close frame (unless the app sent a close frame
/// already) and closes the client's side for writing.
async fn say_going_away<W: AsyncWrite + Unpin>(client: &mut W, frames: Option<&FrameTracker>) {
    if frames.is_some_and(|f| !f.close_seen()) {
        let _ = client.write_all(&GOING_AWAY).await;
    }
    let _ = client.shutdown().await;
}

/// Follows a stream of WebSocket frames (RFC 6455 §5.2) through its headers only: where the
/// current frame ends, so another frame can be put in between, and whether a close frame
/// went by. Headers may arrive split across reads.
#[derive(Debug, Default)]
pub(crate) struct FrameTracker {
    /// The header read so far of the next frame (at most 2 + 8 length + 4 mask bytes).
    header: [u8; 14],
    header_len: usize,
    /// Payload bytes of the current frame not seen yet.
    payload_left: u64,
    /// A close frame (opcode 8) went by.
    close_seen: bool,
}

impl FrameTracker {
    /// Takes in the next bytes of the stream.
    pub(crate) fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            if self.payload_left > 0 {
                let n = self.payload_left.min(data.len() as u64) as usize;
                self.payload_left -= n as u64;
                data = &data[n..];
                continue;
            }
            self.header[self.header_len] = data[0];
            self.header_len += 1;
            data = &data[1..];
            if self.header_len == self.header_needed() {
                self.payload_left = self.payload_len();
                if self.header[0] & 0x0F == 0x8 {
                    self.close_seen = true;
                }
                self.header_len = 0;
            }
        }
    }

    /// Whether the bytes so far end exactly between two frames.
    pub(crate) fn at_boundary(&self) -> bool {
        self.header_len == 0 && self.payload_left == 0
    }

    /// How many more bytes at most belong to the current frame's header or payload (0 at a
    /// boundary): reading no more than that never passes the next boundary.
    pub(crate) fn bytes_to_boundary(&self) -> usize {
        if self.payload_left > 0 {
            usize::try_from(self.payload_left).unwrap_or(usize::MAX)
        } else if self.header_len > 0 {
            self.header_needed() - self.header_len
        } else {
            0
        }
    }

    /// Whether a close frame went by.
    pub(crate) fn close_seen(&self) -> bool {
        self.close_seen
    }

    /// Length of the header being read: 2 bytes, plus 2 or 8 of extended length, plus 4
    /// of mask (servers send none, but a stream that has them is still followed).
    fn header_needed(&self) -> usize {
        if self.header_len < 2 {
            return 2;
        }
        let extended = match self.header[1] & 0x7F {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        let mask = if self.header[1] & 0x80 != 0 { 4 } else { 0 };
        2 + extended + mask
    }

    fn payload_len(&self) -> u64 {
        let h = &self.header;
        match h[1] & 0x7F {
            126 => u64::from(u16::from_be_bytes([h[2], h[3]])),
            127 => u64::from_be_bytes([h[2], h[3], h[4], h[5], h[6], h[7], h[8], h[9]]),
            n => u64::from(n),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server (unmasked, FIN) frame of `opcode` with `len` payload bytes.
    fn frame(opcode: u8, len: usize) -> Vec<u8> {
        let mut out = vec![0x80 | opcode];
        if len < 126 {
            out.push(len as u8);
        } else if len <= usize::from(u16::MAX) {
            out.push(126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            out.push(127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
        out.extend(std::iter::repeat_n(b'x', len));
        out
    }

    #[test]
    fn whole_frames_end_on_a_boundary() {
        let mut t = FrameTracker::default();
        assert!(t.at_boundary());
        let mut stream = frame(0x1, 5);
        stream.extend(frame(0x2, 0));
        stream.extend(frame(0x1, 125));
        t.feed(&stream);
        assert!(t.at_boundary());
        assert!(!t.close_seen());
    }

    #[test]
    fn headers_split_across_reads_byte_by_byte() {
        for len in [0, 1, 125, 126, 300, 65535, 65536, 70000] {
            let mut t = FrameTracker::default();
            let stream = [frame(0x2, len), frame(0x1, 3)].concat();
            let first_end = stream.len() - 5;
            for (i, byte) in stream.iter().enumerate() {
                t.feed(std::slice::from_ref(byte));
                let at = i + 1 == first_end || i + 1 == stream.len();
                assert_eq!(t.at_boundary(), at, "len {len}, after byte {i}");
            }
        }
    }

    #[test]
    fn sixteen_bit_length() {
        let mut t = FrameTracker::default();
        let f = frame(0x2, 1000);
        assert_eq!(&f[..4], &[0x82, 126, 0x03, 0xE8]);
        // The header alone, split after its first two bytes.
        t.feed(&f[..2]);
        assert!(!t.at_boundary());
        assert_eq!(t.bytes_to_boundary(), 2);
        t.feed(&f[2..4]);
        assert_eq!(t.bytes_to_boundary(), 1000);
        t.feed(&f[4..600]);
        assert_eq!(t.bytes_to_boundary(), 1000 - 596);
        t.feed(&f[600..]);
        assert!(t.at_boundary());
    }

    #[test]
    fn sixty_four_bit_length() {
        let mut t = FrameTracker::default();
        // A header announcing 5 GB: nothing that large is fed, only followed.
        let mut header = vec![0x82, 127];
        header.extend_from_slice(&5_000_000_000u64.to_be_bytes());
        t.feed(&header[..7]);
        assert_eq!(t.bytes_to_boundary(), 3);
        t.feed(&header[7..]);
        assert_eq!(t.bytes_to_boundary() as u64, 5_000_000_000);
        t.feed(&[0; 4096]);
        assert_eq!(t.bytes_to_boundary() as u64, 5_000_000_000 - 4096);
        assert!(!t.at_boundary());
        let f = frame(0x2, 70_000);
        assert_eq!(f[1], 127);
        let mut t = FrameTracker::default();
        t.feed(&f[..9]);
        t.feed(&f[9..]);
        assert!(t.at_boundary());
    }

    #[test]
    fn masked_frames_and_close_frames() {
        let mut t = FrameTracker::default();
        // A masked text frame of 3 bytes: 2 header bytes, 4 mask bytes, 3 payload bytes.
        t.feed(&[0x81, 0x83, 1, 2, 3]);
        assert_eq!(t.bytes_to_boundary(), 1);
        t.feed(&[4, b'a', b'b']);
        assert_eq!(t.bytes_to_boundary(), 1);
        t.feed(b"c");
        assert!(t.at_boundary());
        assert!(!t.close_seen());
        t.feed(&frame(0x8, 2));
        assert!(t.close_seen());
        assert!(t.at_boundary());
    }

    #[test]
    fn going_away_frame_is_a_close_with_1001() {
        let mut t = FrameTracker::default();
        t.feed(&GOING_AWAY);
        assert!(t.at_boundary());
        assert!(t.close_seen());
        assert_eq!(u16::from_be_bytes([GOING_AWAY[2], GOING_AWAY[3]]), 1001);
        assert_eq!(&GOING_AWAY[4..], b"going away");
    }

    /// Runs the app→client relay over in-memory pipes; returns the app's end, the client's
    /// end, the going-away signal and the relay's task.
    fn relay(
        websocket: bool,
    ) -> (
        tokio::io::DuplexStream,
        tokio::io::DuplexStream,
        watch::Sender<u64>,
        tokio::task::JoinHandle<io::Result<Ended>>,
    ) {
        let (app, mut app_side) = tokio::io::duplex(1 << 16);
        let (mut client_side, client) = tokio::io::duplex(1 << 16);
        let (signal, mut going_away) = watch::channel(0u64);
        let frames = websocket.then(FrameTracker::default);
        let task =
            tokio::spawn(
                async move { relay_to_client(&mut app_side, &mut client_side, frames, &mut going_away).await },
            );
        (app, client, signal, task)
    }

    #[tokio::test]
    async fn other_upgrades_are_just_closed_when_their_instance_goes_away() {
        let (mut app, mut client, signal, task) = relay(false);
        app.write_all(b"\x81\x7fpartial").await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        signal.send_modify(|g| *g += 1);
        assert!(matches!(task.await.unwrap().unwrap(), Ended::GoingAway));
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"\x81\x7fpartial", "nothing is added");
    }

    #[tokio::test]
    async fn an_app_that_hangs_up_between_frames_leaves_the_client_a_close_frame() {
        let (mut app, mut client, _signal, task) = relay(true);
        let f = frame(0x1, 3);
        app.write_all(&f).await.unwrap();
        drop(app);
        assert!(matches!(task.await.unwrap().unwrap(), Ended::AppClosed));
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, [f, GOING_AWAY.to_vec()].concat());

        // One that closed properly (a close frame of its own) gets no second one.
        let (mut app, mut client, _signal, task) = relay(true);
        let close = frame(0x8, 2);
        app.write_all(&close).await.unwrap();
        drop(app);
        task.await.unwrap().unwrap();
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, close);
    }

    #[tokio::test]
    async fn going_away_waits_for_the_frame_in_progress() {
        let (mut app, mut client, signal, task) = relay(true);
        let f = frame(0x1, 10);
        // Half a frame, then the instance goes away, then the rest and the start of another.
        app.write_all(&f[..6]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        signal.send_modify(|g| *g += 1);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut more = f[6..].to_vec();
        more.extend(frame(0x1, 4));
        app.write_all(&more).await.unwrap();
        let ended = task.await.unwrap().unwrap();
        assert!(matches!(ended, Ended::GoingAway));
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, [f, GOING_AWAY.to_vec()].concat());
    }
}
