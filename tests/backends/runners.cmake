# Runners and command rendering (included from tests/backends/CMakeLists.txt).
# The process runner tests start real (short-lived) processes; the systemd tests start a
# private `systemd --user` manager (tests/support/systemd_user_manager.*) and skip, with the
# reason, where none can run.
gpumod_add_test(runner_tests
  SOURCES
    ${CMAKE_CURRENT_LIST_DIR}/runner_process_test.cpp
    ${CMAKE_CURRENT_LIST_DIR}/command_render_test.cpp
    ${CMAKE_CURRENT_LIST_DIR}/port_owner_test.cpp
  LIBS gpumod_backends
  LABELS backends
  TIMEOUT 120)

gpumod_add_test(systemd_runner_tests
  SOURCES
    ${CMAKE_CURRENT_LIST_DIR}/runner_systemd_test.cpp
  LIBS gpumod_backends gpumod_test_support
  LABELS backends
  TIMEOUT 120)
