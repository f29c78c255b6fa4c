fn main() {
    std::process::exit(tamga_node::cli::main());
}
