# Plugin helpers, used by the FluxAttn build itself and installed with the CMake package, so that
# bundled and third-party plugins are built the same way.

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

# fluxattn_add_plugin(<name> SOURCES <src>... [LIBRARIES <lib>...]
#                     [INSTALL_DESTINATION <dir>] [NO_INSTALL])
# Builds one plugin module `libfluxattn_<name>.so` (target `fluxattn_<name>`) with hidden
# visibility, linked against FluxAttn::core, so that it exports only its descriptor. The file
# name is what the loader scans for. In the FluxAttn build it lands in the build tree's plugin
# directory; elsewhere in the project's binary directory. It is installed into
# INSTALL_DESTINATION (default: FLUXATTN_PLUGIN_INSTALL_DIR, i.e. lib/fluxattn/plugins below the
# install prefix, where a `fluxattn` installed to the same prefix finds it).
function(fluxattn_add_plugin name)
  cmake_parse_arguments(ARG "NO_INSTALL" "INSTALL_DESTINATION" "SOURCES;LIBRARIES" ${ARGN})
  if(NOT ARG_SOURCES)
    message(FATAL_ERROR "fluxattn_add_plugin(${name}): expected SOURCES <files>, found none")
  endif()
  set(target "fluxattn_${name}")
  add_library(${target} MODULE ${ARG_SOURCES})
  target_link_libraries(${target} PRIVATE FluxAttn::core ${ARG_LIBRARIES})
  target_compile_features(${target} PRIVATE cxx_std_20)
  set_target_properties(${target} PROPERTIES
    PREFIX "lib"
    OUTPUT_NAME "fluxattn_${name}"
    CXX_VISIBILITY_PRESET hidden
    VISIBILITY_INLINES_HIDDEN ON
    # Installed plugins live in <prefix>/<libdir>/fluxattn/plugins, two levels below the core.
    INSTALL_RPATH "$ORIGIN/../.."
    INSTALL_RPATH_USE_LINK_PATH ON)
  if(DEFINED FLUXATTN_PLUGIN_OUTPUT_DIR)
    set_target_properties(${target} PROPERTIES LIBRARY_OUTPUT_DIRECTORY
                                               "${FLUXATTN_PLUGIN_OUTPUT_DIR}")
  endif()
  set(destination "${ARG_INSTALL_DESTINATION}")
  if(NOT destination AND DEFINED FLUXATTN_PLUGIN_INSTALL_DIR)
    set(destination "${FLUXATTN_PLUGIN_INSTALL_DIR}")
  endif()
  if(NOT ARG_NO_INSTALL AND destination)
    install(TARGETS ${target} LIBRARY DESTINATION "${destination}")
  endif()
  # The shipped plugins (tests depend on them all); NO_INSTALL ones are test-only.
  if(NOT ARG_NO_INSTALL)
    set_property(GLOBAL APPEND PROPERTY FLUXATTN_PLUGIN_TARGETS ${target})
  endif()
endfunction()
