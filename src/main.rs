fn main() {
    println!("onair");
}
