//! A connection whose writes fail when they make no progress for a while: a client that stops
//! reading (its receive window closed) cannot keep a response, a descriptor and a file open for
//! ever. Reads are left alone (the protocols bound them: hyper's header timeout, a body deadline).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// `inner` with writes that give up after `limit` without progress.
pub struct StallLimited<S> {
    inner: S,
    limit: Duration,
    /// Set while a write or flush is pending: when it fires, the write fails.
    waiting: Option<Pin<Box<Sleep>>>,
}

impl<S> StallLimited<S> {
    pub fn new(inner: S, limit: Duration) -> StallLimited<S> {
        StallLimited { inner, limit, waiting: None }
    }

    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// After the inner call said Pending: Ready(Err) once the limit has passed since the first
    /// Pending in a row.
    fn stalled(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        let limit = self.limit;
        let sleep = self.waiting.get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => {
                self.waiting = None;
                Poll::Ready(io::Error::new(io::ErrorKind::TimedOut, format!("the client read nothing for {limit:?}")))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn write_with<T>(&mut self, cx: &mut Context<'_>, poll: impl FnOnce(Pin<&mut S>, &mut Context<'_>) -> Poll<io::Result<T>>) -> Poll<io::Result<T>>
    where
        S: Unpin,
    {
        match poll(Pin::new(&mut self.inner), cx) {
            Poll::Ready(result) => {
                self.waiting = None;
                Poll::Ready(result)
            }
            Poll::Pending => self.stalled(cx).map(Err),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for StallLimited<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for StallLimited<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.write_with(cx, |s, cx| s.poll_write(cx, buf))
    }

    fn poll_write_vectored(mut self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        self.write_with(cx, |s, cx| s.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.write_with(cx, |s, cx| s.poll_flush(cx))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.write_with(cx, |s, cx| s.poll_shutdown(cx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn a_write_nobody_reads_fails_after_the_limit_and_one_that_is_read_does_not() {
        // A pipe of 16 bytes whose other end never reads.
        let (writer, _reader) = tokio::io::duplex(16);
        let mut limited = StallLimited::new(writer, Duration::from_millis(200));
        let started = std::time::Instant::now();
        let e = limited.write_all(&[0u8; 1024]).await.expect_err("stalled");
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(200) && took < Duration::from_secs(2), "{took:?}");
        // Read slowly but steadily: every chunk within the limit, the whole much longer.
        let (writer, mut reader) = tokio::io::duplex(16);
        let drain = tokio::spawn(async move {
            let mut got = 0;
            let mut buf = [0u8; 16];
            while got < 256 {
                tokio::time::sleep(Duration::from_millis(50)).await;
                got += tokio::io::AsyncReadExt::read(&mut reader, &mut buf).await.expect("read");
            }
        });
        let mut limited = StallLimited::new(writer, Duration::from_millis(200));
        limited.write_all(&[0u8; 256]).await.expect("progress resets the clock");
        drain.await.expect("drain");
    }
}
