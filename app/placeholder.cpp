// Placeholder so the library links while its implementation is written; delete when real sources land.
namespace gpumod {}
