/// mimalloc rather than the system allocator: the store's engine allocates and frees a
/// tree node per insert, and with glibc's malloc that was about a quarter of the CPU of
/// replication. `tamga bench` measures it (README, Performance).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    std::process::exit(tamga_node::cli::main());
}
