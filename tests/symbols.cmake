# Exported-symbol check for libsealroom (include()d from tests/CMakeLists.txt).
add_test(NAME test_symbols
         COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/unit/test_symbols.sh $<TARGET_FILE:sealroom>)
set_tests_properties(test_symbols PROPERTIES LABELS unit TIMEOUT 60)
