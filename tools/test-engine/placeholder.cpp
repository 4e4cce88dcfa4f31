// Placeholder engine
int main() { return 0; }
