//! Byte-stream transports under DERP: a raw connection after `Upgrade: DERP`, or a
//! websocket whose binary messages are concatenated into one stream (a frame may span
//! messages and a message may hold several frames; text messages are an error).
//!
//! The connection loops on both ends are generic over [`DerpRead`] and [`DerpWrite`].

use bytes::{Bytes, BytesMut};
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use std::future::Future;
use std::io;
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_tungstenite::tungstenite::{self, Message};

/// Why a transport read or write failed. Any of these ends the connection.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TransportError {
    /// Socket error.
    #[error("io error: {0}")]
    Io(io::ErrorKind),
    /// The peer sent a websocket text message; DERP is binary only.
    #[error("websocket text message")]
    TextMessage,
    /// Websocket protocol error.
    #[error("websocket error: {0}")]
    WebSocket(String),
}

impl From<io::Error> for TransportError {
    fn from(e: io::Error) -> Self {
        Self::Io(e.kind())
    }
}

/// The receive half of a DERP transport.
pub trait DerpRead: Send {
    /// Appends whatever arrives next to `buf`; `Ok(0)` means the peer closed.
    fn read_into(
        &mut self,
        buf: &mut BytesMut,
    ) -> impl Future<Output = Result<usize, TransportError>> + Send;
}

/// The send half of a DERP transport.
pub trait DerpWrite: Send {
    /// Writes `data` completely (one websocket message, or raw bytes) and flushes.
    fn write_all(&mut self, data: Bytes)
    -> impl Future<Output = Result<(), TransportError>> + Send;
    /// Closes the write side, best effort.
    fn shutdown(&mut self) -> impl Future<Output = ()> + Send;
}

/// Bytes read per call on a raw stream; one syscall usually drains the socket buffer.
const READ_CHUNK: usize = 64 << 10;

/// The read half of a raw byte stream.
#[derive(Debug)]
pub struct RawReader<R>(pub R);

impl<R: AsyncRead + Unpin + Send> DerpRead for RawReader<R> {
    async fn read_into(&mut self, buf: &mut BytesMut) -> Result<usize, TransportError> {
        buf.reserve(READ_CHUNK);
        Ok(self.0.read_buf(buf).await?)
    }
}

/// The write half of a raw byte stream.
#[derive(Debug)]
pub struct RawWriter<W>(pub W);

impl<W: AsyncWrite + Unpin + Send> DerpWrite for RawWriter<W> {
    async fn write_all(&mut self, data: Bytes) -> Result<(), TransportError> {
        self.0.write_all(&data).await?;
        Ok(self.0.flush().await?)
    }
    async fn shutdown(&mut self) {
        let _ = self.0.shutdown().await;
    }
}

/// The read half of a tungstenite websocket (the client side).
#[derive(Debug)]
pub struct WsReader<S>(pub S);

impl<S> DerpRead for WsReader<S>
where
    S: Stream<Item = Result<Message, tungstenite::Error>> + Unpin + Send,
{
    async fn read_into(&mut self, buf: &mut BytesMut) -> Result<usize, TransportError> {
        loop {
            match self.0.next().await {
                None | Some(Ok(Message::Close(_))) => return Ok(0),
                Some(Ok(Message::Binary(b))) if !b.is_empty() => {
                    buf.extend_from_slice(&b);
                    return Ok(b.len());
                }
                Some(Ok(Message::Text(_))) => return Err(TransportError::TextMessage),
                // Empty binary messages, pings and pongs carry no DERP bytes.
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(ws_error(e)),
            }
        }
    }
}

/// The write half of a tungstenite websocket.
#[derive(Debug)]
pub struct WsWriter<S>(pub S);

impl<S> DerpWrite for WsWriter<S>
where
    S: Sink<Message, Error = tungstenite::Error> + Unpin + Send,
{
    async fn write_all(&mut self, data: Bytes) -> Result<(), TransportError> {
        self.0.send(Message::Binary(data)).await.map_err(ws_error)
    }
    async fn shutdown(&mut self) {
        let _ = self.0.close().await;
    }
}

fn ws_error(e: tungstenite::Error) -> TransportError {
    match e {
        tungstenite::Error::Io(e) => TransportError::Io(e.kind()),
        tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed => {
            TransportError::Io(io::ErrorKind::ConnectionAborted)
        }
        e => TransportError::WebSocket(e.to_string()),
    }
}
