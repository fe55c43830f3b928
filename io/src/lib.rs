//! smoke
pub fn smoke() -> usize {
    use glommio::{LocalExecutorPoolBuilder, PoolPlacement};
    let h = LocalExecutorPoolBuilder::new(PoolPlacement::Unbound(2))
        .io_memory(1 << 20)
        .on_all_shards(|| async move { glommio::executor().id() })
        .unwrap();
    h.join_all().into_iter().map(|r| r.unwrap()).sum()
}
