//! What every [`MetaStore`](super::MetaStore) must do, as tests each store
//! runs against itself (the local DuckDB store and Postgres).

use super::{Collection, Expect, Labels, ListQuery, Meta, MetaError};

#[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct Rec {
    n: u32,
}

pub(crate) async fn conditional_writes_detect_concurrent_changes(meta: Meta) {
    let put = |n, expect| {
        let meta = meta.clone();
        async move {
            meta.put_if(Collection::Jobs, "k", &Rec { n }, Labels::new(), expect)
                .await
        }
    };
    assert_eq!(put(1, Expect::Absent).await.unwrap(), 1);
    assert!(matches!(
        put(2, Expect::Absent).await,
        Err(MetaError::Conflict { .. })
    ));
    let read = meta
        .get_versioned::<Rec>(Collection::Jobs, "k")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((read.version, read.value.n), (1, 1));
    assert_eq!(put(3, Expect::Version(1)).await.unwrap(), 2);
    // A writer still holding version 1 loses, and changes nothing.
    let err = put(4, Expect::Version(1)).await.unwrap_err();
    assert!(err.to_string().contains("jobs/k"), "{err}");
    assert_eq!(
        meta.get::<Rec>(Collection::Jobs, "k").await.unwrap(),
        Some(Rec { n: 3 })
    );
    assert_eq!(put(5, Expect::Any).await.unwrap(), 3);
}

pub(crate) async fn listings_page_and_filter_by_label_and_prefix(meta: Meta) {
    for n in 0..7u32 {
        let owner = if n % 2 == 0 { "even" } else { "odd" };
        let labels = Labels::from([("owner", owner.to_string())]);
        let key = format!("{}-{n}", if n < 5 { "a" } else { "b" });
        meta.put_if(Collection::Jobs, &key, &Rec { n }, labels, Expect::Any)
            .await
            .unwrap();
    }
    // Relabelling replaces the old labels.
    meta.put_if(
        Collection::Jobs,
        "a-0",
        &Rec { n: 0 },
        Labels::from([("owner", "odd".to_string())]),
        Expect::Any,
    )
    .await
    .unwrap();
    let query = ListQuery {
        limit: Some(2),
        ..ListQuery::default()
    }
    .label("owner", "odd");
    assert_eq!(every_page(&meta, query).await, vec![0, 1, 3, 5]);
    // Descending pages walk the same records the other way.
    let query = ListQuery {
        limit: Some(3),
        descending: true,
        ..ListQuery::default()
    }
    .label("owner", "odd");
    assert_eq!(every_page(&meta, query).await, vec![5, 3, 1, 0]);
    let prefixed = ListQuery {
        prefix: Some("b-".into()),
        ..ListQuery::default()
    };
    let page = meta.page::<Rec>(Collection::Jobs, &prefixed).await.unwrap();
    let keys: Vec<&str> = page.items.iter().map(|v| v.key.as_str()).collect();
    assert_eq!(keys, vec!["b-5", "b-6"]);
    assert_eq!(page.next, None);
    assert!(meta.delete(Collection::Jobs, "b-5").await.unwrap());
    let odd = ListQuery::default().label("owner", "odd");
    let page = meta.page::<Rec>(Collection::Jobs, &odd).await.unwrap();
    assert_eq!(page.items.len(), 3);
}

pub(crate) async fn each_queued_record_is_claimed_exactly_once(meta: Meta) {
    for n in 0..5u32 {
        let labels = Labels::from([("state", "queued".to_string())]);
        meta.put_if(
            Collection::Jobs,
            &format!("j{n}"),
            &Rec { n },
            labels,
            Expect::Absent,
        )
        .await
        .unwrap();
    }
    let queued = ListQuery::default().label("state", "queued");
    let claimers = (0..4).map(|_| {
        let meta = meta.clone();
        let queued = queued.clone();
        tokio::spawn(async move {
            let mut mine = Vec::new();
            while let Some(claimed) = meta
                .claim::<Rec, _>(Collection::Jobs, &queued, |_| {
                    Labels::from([("state", "running".to_string())])
                })
                .await
                .unwrap()
            {
                mine.push(claimed.value.n);
            }
            mine
        })
    });
    let mut all: Vec<u32> = Vec::new();
    for claimer in claimers.collect::<Vec<_>>() {
        all.extend(claimer.await.unwrap());
    }
    all.sort_unstable();
    assert_eq!(all, vec![0, 1, 2, 3, 4]);
    let page = meta.page::<Rec>(Collection::Jobs, &queued).await.unwrap();
    assert!(page.items.is_empty());
}

/// The records of every page `query` leads through, in order.
async fn every_page(meta: &Meta, mut query: ListQuery) -> Vec<u32> {
    let mut seen = Vec::new();
    loop {
        let page = meta.page::<Rec>(Collection::Jobs, &query).await.unwrap();
        seen.extend(page.items.iter().map(|v| v.value.n));
        match page.next {
            Some(next) => query.after = Some(next),
            None => return seen,
        }
    }
}
