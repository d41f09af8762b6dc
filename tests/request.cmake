# The request model (request/request.h): the table of limits, the one validation, the mapping to
# and from the protobuf messages (request/request_pb.h).
if(TARGET ts_request_pb)
  ts_add_test(NAME test_request SOURCES unit/test_request.c LIBS ts_request_pb LABELS unit)
endif()
