# Drivers, GPU probes and the test engine. The integration tests spawn the built engine.
gpumod_add_test(driver_tests SOURCES ${CMAKE_CURRENT_LIST_DIR}/driver_test.cpp
  LIBS gpumod_backends gpumod_test_support LABELS backends integration TIMEOUT 60)
add_dependencies(driver_tests gpumod-test-engine)

gpumod_add_test(engine_tests SOURCES ${CMAKE_CURRENT_LIST_DIR}/engine_test.cpp
  LIBS gpumod_backends gpumod_test_support PkgConfig::HTTPLIB nlohmann_json::nlohmann_json LABELS backends integration TIMEOUT 60)
add_dependencies(engine_tests gpumod-test-engine)

gpumod_add_test(probe_tests SOURCES ${CMAKE_CURRENT_LIST_DIR}/probe_test.cpp
  LIBS gpumod_backends gpumod_test_support LABELS backends TIMEOUT 60)
add_dependencies(probe_tests gpumod-test-engine)
