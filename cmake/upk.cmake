# Helpers shared by every part's CMakeLists.

# upk_unit_test(NAME SOURCES... LIBS ...): a cmocka executable registered with
# ctest under its name, labelled "unit".
function(upk_unit_test name)
  cmake_parse_arguments(T "" "" "SOURCES;LIBS" ${ARGN})
  add_executable(${name} ${T_SOURCES})
  target_link_libraries(${name} PRIVATE ${T_LIBS} cmocka::cmocka)
  set_target_properties(${name} PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/tests)
  add_test(NAME ${name} COMMAND ${name})
  set_tests_properties(${name} PROPERTIES LABELS unit TIMEOUT 120)
endfunction()

# upk_fuzz_target(NAME SOURCES... LIBS ... CORPUS dir): a libFuzzer target,
# built only with clang. ctest runs it briefly (UPK_FUZZ_SECONDS, default 5)
# over its seed corpus; `make fuzz` runs it longer.
set(UPK_FUZZ_SECONDS 5 CACHE STRING "seconds each fuzz target runs under ctest")
function(upk_fuzz_target name)
  cmake_parse_arguments(T "" "CORPUS" "SOURCES;LIBS" ${ARGN})
  if(NOT UPK_HAVE_LIBFUZZER)
    return()
  endif()
  # Link the coverage-instrumented variant of a library where one exists.
  set(libs "")
  foreach(lib ${T_LIBS})
    if(TARGET ${lib}_fuzz)
      list(APPEND libs ${lib}_fuzz)
    else()
      list(APPEND libs ${lib})
    endif()
  endforeach()
  set(T_LIBS ${libs})
  add_executable(${name} ${T_SOURCES})
  target_compile_options(${name} PRIVATE -fsanitize=fuzzer)
  target_link_options(${name} PRIVATE -fsanitize=fuzzer)
  target_link_libraries(${name} PRIVATE ${T_LIBS})
  set_target_properties(${name} PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/fuzz)
  set(workdir ${CMAKE_BINARY_DIR}/fuzz/${name}.corpus)
  # The seed corpus is copied so that a run never writes into the source tree.
  add_test(NAME ${name}
           COMMAND ${CMAKE_COMMAND} -E env
                   sh -c "rm -rf '${workdir}' && mkdir -p '${workdir}' && cp -r '${T_CORPUS}'/. '${workdir}'/ && exec '$<TARGET_FILE:${name}>' -max_total_time=${UPK_FUZZ_SECONDS} -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 '${workdir}'")
  set_tests_properties(${name} PROPERTIES LABELS fuzz TIMEOUT 300)
endfunction()
