# Install rules for the SDK: headers, libraries, the `fluxattn` binary and the bundled plugins
# are installed by their own folders; this file adds the CMake package that lets a third party
# write `find_package(FluxAttn CONFIG)` and build plugins with fluxattn_add_plugin().
include(CMakePackageConfigHelpers)

set(FLUXATTN_CMAKE_INSTALL_DIR "${CMAKE_INSTALL_LIBDIR}/cmake/FluxAttn")

# Consumers get the C++ standard the ABI was compiled with, and the installed libraries find
# each other (and CUDA's runtime, when built with it) without LD_LIBRARY_PATH.
target_compile_features(fluxattn_core PUBLIC cxx_std_20)
set_target_properties(fluxattn_core PROPERTIES EXPORT_NAME core INSTALL_RPATH "$ORIGIN"
                                               INSTALL_RPATH_USE_LINK_PATH ON)
if(TARGET fluxattn_models)
  get_target_property(_fa_models_type fluxattn_models TYPE)
  if(NOT _fa_models_type STREQUAL "INTERFACE_LIBRARY")
    set_target_properties(fluxattn_models PROPERTIES EXPORT_NAME models INSTALL_RPATH "$ORIGIN"
                                                     INSTALL_RPATH_USE_LINK_PATH ON)
    install(DIRECTORY "${PROJECT_SOURCE_DIR}/models/include/fluxattn"
            DESTINATION "${CMAKE_INSTALL_INCLUDEDIR}")
  endif()
endif()
if(TARGET fluxattn)
  set_target_properties(fluxattn PROPERTIES INSTALL_RPATH_USE_LINK_PATH ON)
endif()

install(EXPORT FluxAttnTargets NAMESPACE FluxAttn:: DESTINATION "${FLUXATTN_CMAKE_INSTALL_DIR}"
        FILE FluxAttnTargets.cmake)
configure_package_config_file("${PROJECT_SOURCE_DIR}/cmake/FluxAttnConfig.cmake.in"
  "${PROJECT_BINARY_DIR}/cmake/FluxAttnConfig.cmake"
  INSTALL_DESTINATION "${FLUXATTN_CMAKE_INSTALL_DIR}"
  PATH_VARS CMAKE_INSTALL_INCLUDEDIR FLUXATTN_PLUGIN_INSTALL_DIR CMAKE_INSTALL_BINDIR)
# Plugins are binary-compatible within a core major version (the loader's build-id rule).
write_basic_package_version_file("${PROJECT_BINARY_DIR}/cmake/FluxAttnConfigVersion.cmake"
  VERSION "${PROJECT_VERSION}" COMPATIBILITY SameMajorVersion)
install(FILES "${PROJECT_BINARY_DIR}/cmake/FluxAttnConfig.cmake"
              "${PROJECT_BINARY_DIR}/cmake/FluxAttnConfigVersion.cmake"
              "${PROJECT_SOURCE_DIR}/cmake/FluxAttnPlugin.cmake"
        DESTINATION "${FLUXATTN_CMAKE_INSTALL_DIR}")
