//! `List` and paged `Range` as async streams.

use std::collections::VecDeque;

use futures_core::Stream;
use mokv_proto::api::kv_client::KvClient;
use mokv_proto::api::GetResponse;
use tonic::transport::Channel;
use tonic::Streaming;

use crate::retry::{classify, Failure};
use crate::types::Entry;
use crate::{Client, ClientError, RangeOptions, ReadFrom};

struct Pages {
    client: Client,
    prefix: String,
    opts: RangeOptions,
    buffered: VecDeque<Entry>,
    /// The next page's token; `None` after the last page.
    next: Option<String>,
}

impl Client {
    /// Every key under `prefix` (with its value unless `opts.keys_only`), in key order, read
    /// page by page with [`range`](Self::range): each page is one read (linearizable by
    /// default) with the client's retries, placed by `opts.read`, so a long scan spreads over
    /// the nodes and survives a node failing between pages. A writer between pages may be
    /// seen in later pages and not in earlier ones (as with etcd's paginated range).
    ///
    /// An error ends the stream (it is its last item). At most one page is buffered.
    pub fn range_stream(
        &self,
        prefix: &str,
        opts: RangeOptions,
    ) -> impl Stream<Item = Result<Entry, ClientError>> + Send + 'static {
        let state = Pages {
            client: self.clone(),
            prefix: prefix.to_owned(),
            next: Some(opts.page_token.clone()),
            opts,
            buffered: VecDeque::new(),
        };
        futures_util::stream::try_unfold(state, |mut st| async move {
            loop {
                if let Some(e) = st.buffered.pop_front() {
                    return Ok(Some((e, st)));
                }
                let Some(token) = st.next.take() else { return Ok(None) };
                let (entries, next) = st
                    .client
                    .range(&st.prefix, st.opts.page_size, &token, st.opts.keys_only, st.opts.read)
                    .await?;
                st.buffered = entries.into();
                st.next = (!next.is_empty()).then_some(next);
            }
        })
    }

    /// Every key with its value through the `List` rpc (the original mökv's stream), from one
    /// node chosen like a read from `from` (`None`: the client's
    /// [`read_from`](crate::ClientConfig::read_from)). The node pages through the keys with
    /// linearizable reads. Opening the stream is retried like any read; a failure after the
    /// first item ends the stream with that error (start again, or use
    /// [`range_stream`](Self::range_stream), whose pages are each retried).
    ///
    /// `List` needs `consume` on every key (`*`); an identity limited to a prefix uses
    /// [`range_stream`](Self::range_stream) with that prefix.
    pub fn list(
        &self,
        from: Option<ReadFrom>,
    ) -> impl Stream<Item = Result<Entry, ClientError>> + Send + 'static {
        let client = self.clone();
        let state: Option<Streaming<GetResponse>> = None;
        futures_util::stream::try_unfold(
            (client, state, from),
            |(client, state, from)| async move {
                let mut stream = match state {
                    Some(s) => s,
                    None => {
                        let call = |mut kv: KvClient<Channel>, ()| async move { kv.list(()).await };
                        client.read(from, (), call).await?
                    }
                };
                match stream.message().await {
                    Ok(Some(item)) => Ok(Some((Entry::from(item), (client, Some(stream), from)))),
                    Ok(None) => Ok(None),
                    Err(s) => Err(match classify(s) {
                        Failure::Server(s) => ClientError::from_status(&s),
                        Failure::Local { why, .. } => {
                            ClientError::Unavailable { attempts: 1, last: why }
                        }
                    }),
                }
            },
        )
    }
}
