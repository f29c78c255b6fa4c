//! Work split across the machine's cores for the length of one call: the node's few
//! CPU-bound steps that the single write path would otherwise do one after another.

use std::sync::OnceLock;

/// The cores this process may use, asked once (the answer reads the process's cgroup
/// files each time it is asked).
pub fn cores() -> usize {
    static CORES: OnceLock<usize> = OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// `f` of every item, in order: the first on the calling thread, each other on a scoped
/// thread of its own. A panic on a helper thread resumes on the caller.
pub fn each_on_a_thread<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let Some((first, rest)) = items.split_first() else { return Vec::new() };
    std::thread::scope(|scope| {
        let f = &f;
        let others: Vec<_> = rest.iter().map(|item| scope.spawn(move || f(item))).collect();
        let mut out = Vec::with_capacity(items.len());
        out.push(f(first));
        out.extend(
            others.into_iter().map(|h| h.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))),
        );
        out
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_item_is_done_once_in_order() {
        let items: Vec<u32> = (0..5).collect();
        assert_eq!(each_on_a_thread(&items, |i| i * 10), vec![0, 10, 20, 30, 40]);
        assert!(each_on_a_thread(&[] as &[u32], |i| *i).is_empty());
    }
}
