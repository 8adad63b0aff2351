//! Zero-copy file responses: `send_file` and the `sendfile(2)` loop.

use crate::io::{timed, Deadline, Plain};
use crate::response::ResponseData;
use bytes::BytesMut;
use std::fmt;
use std::fs::File;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWrite, AsyncWriteExt, Interest};
use tokio::time::Sleep;

/// Most bytes one `sendfile` call is asked for: Linux moves at most
/// 0x7ffff000 bytes per call anyway.
const MAX_SENDFILE: u64 = 0x7fff_f000;

/// Piece size when a file has to be read and written through user space
/// (TLS): the memory used per connection, whatever the file's size.
const READ_PIECE: usize = 64 * 1024;

/// Why a file could not be opened for sending: mist's `FileError`.
///
/// ```
/// use mist::{send_file, FileError};
/// assert!(matches!(send_file("/no/such/file", 0, None), Err(FileError::NoEntry)));
/// assert!(matches!(send_file("/", 0, None), Err(FileError::IsDir)));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileError {
    /// The path is a directory.
    IsDir,
    /// The file exists but may not be read.
    NoAccess,
    /// Nothing exists at the path.
    NoEntry,
    /// Any other error of the operating system.
    UnknownFileError,
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FileError::IsDir => "the path is a directory",
            FileError::NoAccess => "permission denied",
            FileError::NoEntry => "no such file",
            FileError::UnknownFileError => "the file cannot be opened",
        })
    }
}

impl std::error::Error for FileError {}

impl From<io::Error> for FileError {
    fn from(err: io::Error) -> Self {
        match err.kind() {
            io::ErrorKind::NotFound | io::ErrorKind::NotADirectory => FileError::NoEntry,
            io::ErrorKind::PermissionDenied => FileError::NoAccess,
            io::ErrorKind::IsADirectory => FileError::IsDir,
            _ => FileError::UnknownFileError,
        }
    }
}

/// An open file and the part of it a response sends; made by [`send_file`]
/// or [`send_open_file`].
///
/// ```
/// # let path = std::env::temp_dir().join(format!("mist-doc-{}", std::process::id()));
/// # std::fs::write(&path, b"0123456789").unwrap();
/// let body = mist::send_file(&path, 2, Some(5)).unwrap();
/// let mist::ResponseData::File(file) = body else { unreachable!() };
/// assert_eq!((file.offset(), file.len()), (2, 5));
/// # std::fs::remove_file(&path).unwrap();
/// ```
#[derive(Debug)]
pub struct FileBody {
    file: File,
    offset: u64,
    length: u64,
}

impl FileBody {
    /// Where in the file the body starts.
    ///
    /// ```
    /// # let path = std::env::temp_dir().join(format!("mist-doc-off-{}", std::process::id()));
    /// # std::fs::write(&path, b"0123456789").unwrap();
    /// # let mist::ResponseData::File(file) = mist::send_file(&path, 4, None).unwrap() else { unreachable!() };
    /// assert_eq!(file.offset(), 4);
    /// # std::fs::remove_file(&path).unwrap();
    /// ```
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// How many bytes are sent: the response's `content-length`.
    ///
    /// ```
    /// # let path = std::env::temp_dir().join(format!("mist-doc-len-{}", std::process::id()));
    /// # std::fs::write(&path, b"0123456789").unwrap();
    /// # let mist::ResponseData::File(file) = mist::send_file(&path, 4, None).unwrap() else { unreachable!() };
    /// assert_eq!(file.len(), 6);
    /// # std::fs::remove_file(&path).unwrap();
    /// ```
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> u64 {
        self.length
    }
}

/// Opens a file to send as a response body: mist's `send_file`.
///
/// The body is `limit` bytes from `offset` (or the rest of the file when
/// `limit` is `None`; never past the end of the file). On a plain TCP or
/// Unix connection the kernel copies it to the socket with `sendfile(2)`: no
/// byte passes through user space and memory stays flat whatever the
/// file's size. The response gets `content-length` of the bytes sent. If
/// the file shrinks while it is sent, the connection is closed rather than
/// sending a wrong length.
///
/// Opening is synchronous (an `open` and an `fstat`, as nginx does on its
/// event loop): microseconds on a local disk, where a trip to a blocking
/// thread would cost more. On a network file system that may stall, open
/// the file in `tokio::task::spawn_blocking` and pass it to
/// [`send_open_file`].
///
/// ```no_run
/// use http::{Request, Response, StatusCode};
/// use mist::{Connection, FileError, ResponseData};
///
/// async fn download(_req: Request<Connection>) -> Response<ResponseData> {
///     match mist::send_file("/var/www/report.pdf", 0, None) {
///         Ok(body) => Response::new(body),
///         Err(FileError::NoEntry | FileError::IsDir) => status(StatusCode::NOT_FOUND),
///         Err(FileError::NoAccess) => status(StatusCode::FORBIDDEN),
///         Err(_) => status(StatusCode::INTERNAL_SERVER_ERROR),
///     }
/// }
/// # fn status(code: StatusCode) -> Response<ResponseData> {
/// #     let mut r = Response::new(ResponseData::empty()); *r.status_mut() = code; r
/// # }
/// ```
pub fn send_file(
    path: impl AsRef<Path>,
    offset: u64,
    limit: Option<u64>,
) -> Result<ResponseData, FileError> {
    let file = File::open(path.as_ref())?;
    let metadata = file.metadata()?;
    if metadata.is_dir() {
        return Err(FileError::IsDir);
    }
    let available = metadata.len().saturating_sub(offset);
    let length = limit.map_or(available, |limit| limit.min(available));
    Ok(ResponseData::File(FileBody {
        file,
        offset,
        length,
    }))
}

/// A response body of `length` bytes of a file the handler has opened
/// itself, from `offset`: [`send_file`] without the path.
///
/// For a handler that opens the file its own way (relative to a directory
/// it holds open, say) and has read its metadata anyway, to set
/// `content-length`, `last-modified` or a range: no second open or `stat`.
/// The length is taken as given and becomes the `content-length`; if the
/// file holds fewer bytes when they are sent (an offset past its end
/// included, or an `offset + length` past `u64::MAX`), the connection is
/// closed after the head and the bytes that exist, as when a file shrinks
/// while [`send_file`]'s body is sent, so a client never takes a short
/// body for a whole one.
///
/// ```no_run
/// use http::Response;
/// use mist::ResponseData;
///
/// fn download(file: std::fs::File) -> std::io::Result<Response<ResponseData>> {
///     let size = file.metadata()?.len();
///     Ok(Response::new(mist::send_open_file(file, 0, size)))
/// }
/// ```
pub fn send_open_file(file: File, offset: u64, length: u64) -> ResponseData {
    ResponseData::File(FileBody {
        file,
        offset,
        length,
    })
}

impl FileBody {
    /// Sends the body with `sendfile(2)`, driven by the socket's write
    /// readiness: partial sends continue where they stopped. A client that
    /// accepts nothing for `timeout` is given up on.
    pub(crate) async fn send_zero_copy(
        self,
        socket: &dyn Plain,
        timer: &mut Pin<Box<Sleep>>,
        timeout: Duration,
    ) -> io::Result<()> {
        let FileBody {
            file,
            mut offset,
            length,
        } = self;
        let end = offset
            .checked_add(length)
            .ok_or(io::ErrorKind::InvalidInput)?;
        while offset < end {
            let count = (end - offset).min(MAX_SENDFILE) as usize;
            timed(
                timer,
                Deadline::After(timeout),
                std::future::poll_fn(|cx| socket.poll_write_ready(cx)),
            )
            .await
            .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
            let sent = socket.try_io(Interest::WRITABLE, &mut || {
                rustix::fs::sendfile(socket.as_fd(), &file, Some(&mut offset), count)
                    .map_err(io::Error::from)
            });
            match sent {
                // The file ended before `length`: it shrank while being sent.
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(_) => {}
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                Err(err) => return Err(err),
            }
        }
        Ok(())
    }

    /// Sends the body through user space, one bounded piece at a time, for
    /// streams the kernel cannot write files into (TLS).
    pub(crate) async fn send_copied<W: AsyncWrite + Unpin>(
        self,
        out: &mut W,
        timer: &mut Pin<Box<Sleep>>,
        timeout: Duration,
    ) -> io::Result<()> {
        let mut pieces = self.pieces();
        let mut piece = BytesMut::with_capacity(READ_PIECE.min(pieces.remaining as usize));
        while pieces.read(&mut piece).await? {
            timed(timer, Deadline::After(timeout), out.write_all(&piece))
                .await
                .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
        }
        out.flush().await
    }

    /// The body read in bounded pieces (for HTTP/2 and TLS).
    pub(crate) fn pieces(self) -> FilePieces {
        FilePieces {
            file: tokio::fs::File::from_std(self.file),
            seek_to: Some(self.offset),
            remaining: self.length,
        }
    }
}

/// A [`FileBody`] read piece by piece; see [`FileBody::pieces`].
pub(crate) struct FilePieces {
    file: tokio::fs::File,
    /// Where to start, until the first read has sought there.
    seek_to: Option<u64>,
    remaining: u64,
}

impl FilePieces {
    /// Reads the next piece, at most 64 KiB, into `piece` (cleared first);
    /// `false` once the body is complete. A file that ends early is an
    /// `UnexpectedEof` error: it shrank while being sent.
    pub(crate) async fn read(&mut self, piece: &mut BytesMut) -> io::Result<bool> {
        piece.clear();
        if self.remaining == 0 {
            return Ok(false);
        }
        if let Some(offset) = self.seek_to.take() {
            self.file.seek(io::SeekFrom::Start(offset)).await?;
        }
        let want = self.remaining.min(READ_PIECE as u64);
        let read = (&mut self.file).take(want).read_buf(piece).await?;
        if read == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        self.remaining -= read as u64;
        Ok(true)
    }
}
