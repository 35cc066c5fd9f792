# Adds every immediate subdirectory of DIR that has a CMakeLists.txt.
function(fluxattn_add_subdirectories dir)
  file(GLOB _children LIST_DIRECTORIES true "${CMAKE_CURRENT_SOURCE_DIR}/${dir}/*")
  list(SORT _children)
  foreach(_child IN LISTS _children)
    if(IS_DIRECTORY "${_child}" AND EXISTS "${_child}/CMakeLists.txt")
      add_subdirectory("${_child}")
    endif()
  endforeach()
endfunction()

# fluxattn_add_plugin(<name> SOURCES <src>... [LIBRARIES <lib>...])
# Builds one plugin shared library `fluxattn_<name>` with hidden visibility, linked against the
# core library, placed in the plugin directory of the build tree and installed next to the others.
function(fluxattn_add_plugin name)
  cmake_parse_arguments(ARG "" "" "SOURCES;LIBRARIES" ${ARGN})
  set(target "fluxattn_${name}")
  add_library(${target} MODULE ${ARG_SOURCES})
  target_link_libraries(${target} PRIVATE fluxattn::core ${ARG_LIBRARIES})
  set_target_properties(${target} PROPERTIES
    PREFIX "lib"
    CXX_VISIBILITY_PRESET hidden
    VISIBILITY_INLINES_HIDDEN ON
    LIBRARY_OUTPUT_DIRECTORY "${FLUXATTN_PLUGIN_OUTPUT_DIR}")
  if(DEFINED FLUXATTN_PLUGIN_INSTALL_DIR)
    install(TARGETS ${target} LIBRARY DESTINATION "${FLUXATTN_PLUGIN_INSTALL_DIR}")
  endif()
  set_property(GLOBAL APPEND PROPERTY FLUXATTN_PLUGIN_TARGETS ${target})
endfunction()
